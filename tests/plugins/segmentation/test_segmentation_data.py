"""The segmentation data path: layouts claimed, class names, aligned joint transforms, bad samples, demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from seg_trees import CLASSES, make_masks_tree, make_voc_tree, scene
from visionkit_segmentation.check import check_tree
from visionkit_segmentation.data import SegmentationDataset, train_transform
from visionkit_segmentation.datamodule import SegmentationDataModule
from visionkit_segmentation.demo import ScenesDataModule, materialise_scenes
from visionkit_segmentation.layouts import VOC_CLASSES, scan
from visionkit_segmentation.plugin import visionkit_claim_data
from visionkit_segmentation.scenes import CLASS_NAMES, render_scene

from visionkit_core import UsageError
from visionkit_core.kit.demo import is_complete


def datamodule(root, **kwargs):
    return SegmentationDataModule(root=str(root), **{"batch_size": 4, "image_size": 32, **kwargs})


# -- layouts ---------------------------------------------------------------------------


def test_both_layouts_are_claimed_and_other_paths_are_not(tmp_path):
    masks = make_masks_tree(tmp_path / "masks")
    voc = make_voc_tree(tmp_path / "voc")
    (tmp_path / "imagefolder" / "train" / "cat").mkdir(parents=True)
    assert visionkit_claim_data(masks) == "segmasks"
    assert visionkit_claim_data(voc) == "segmasks"
    assert visionkit_claim_data(tmp_path / "imagefolder") is None
    assert visionkit_claim_data(masks / "classes.txt") is None
    assert visionkit_claim_data(tmp_path / "missing") is None


def test_class_names_come_from_classes_txt_voc_or_the_largest_mask_value(tmp_path):
    assert datamodule(make_masks_tree(tmp_path / "a")).data_info().class_names == CLASSES
    plain = make_masks_tree(tmp_path / "b", classes_txt=False)
    info = datamodule(plain).data_info()
    assert info.class_names == ["class_0", "class_1", "class_2"] and info.ignore_index == 255
    assert datamodule(make_voc_tree(tmp_path / "voc")).data_info().class_names == VOC_CLASSES


def test_splits_are_declared_as_present_and_batches_are_uint8_images_with_int64_mask_samples(tmp_path):
    root = make_masks_tree(tmp_path / "t", counts={"train": 8, "val": 4, "test": 2})
    dm = datamodule(root)
    spec = dm.data_spec()
    assert spec.splits == ("train", "val", "test") and spec.batch == "tuple" and spec.image_key == 0
    assert datamodule(make_masks_tree(tmp_path / "u")).data_spec().splits == ("train", "val")
    dm.setup("fit")
    image, truth = dm.datasets["train"][0][:2]  # an item: the image and its Sample
    assert image.shape == (3, 32, 32) and set(truth) == {"mask"} and truth["mask"].dtype == torch.int64
    images, truth = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    assert set(truth) == {"mask"}
    assert truth["mask"].dtype == torch.int64 and truth["mask"].shape == (4, 32, 32)
    assert dm.preprocessing() == {"image_size": 32, "resize": "square", "interpolation": "bilinear"}


def test_voc_palette_masks_give_class_indices_and_keep_the_255_border(tmp_path):
    dm = datamodule(make_voc_tree(tmp_path / "voc"))
    dm.setup("fit")
    masks = next(iter(dm.val_dataloader()))[1]["mask"]
    values = set(masks.unique().tolist())
    assert values <= {0, 1, 2, 255} and 255 in values and {1, 2} <= values  # indices, not colours
    assert (masks[:, 0, :] == 255).all()


def test_a_folder_without_val_is_split_by_val_split_and_seed(tmp_path):
    root = make_masks_tree(tmp_path / "t", counts={"train": 10})
    dm = datamodule(root, val_split=0.3, seed=1)
    dm.setup("fit")
    train, val = dm.datasets["train"].pairs, dm.datasets["val"].pairs
    assert len(val) == 3 and len(train) == 7 and not set(train) & set(val)
    again = datamodule(root, val_split=0.3, seed=1)
    again.setup("fit")
    assert again.datasets["val"].pairs == val


# -- joint transforms -----------------------------------------------------------------------


def test_training_augmentation_moves_the_mask_with_the_image_and_invents_no_classes():
    image, mask = scene(3, size=48, height=40)
    ds = SegmentationDataset([], train_transform(32, scale_min=0.3), num_classes=3)
    img, m = torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)
    for seed in range(8):
        torch.manual_seed(seed)
        from torchvision import tv_tensors

        out_img, out_mask = ds.transform(img, tv_tensors.Mask(m))
        assert out_img.shape == (3, 32, 32) and out_mask.shape == (32, 32)
        assert set(out_mask.unique().tolist()) <= {0, 1, 2}  # nearest: no value between classes
        from_image = (out_img[0].float() / 60.0).round().long()  # the red channel encodes the class
        assert (from_image == out_mask.long()).float().mean() > 0.9


def test_the_same_sample_seed_gives_the_same_augmentation(tmp_path):
    dm = datamodule(make_masks_tree(tmp_path / "t"))
    dm.setup("fit")
    ds = dm.datasets["train"]
    a, b, c = ds[(2, 123)], ds[(2, 123)], ds[(2, 124)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["mask"], b[1]["mask"])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1]["mask"], c[1]["mask"]))


# -- bad samples ----------------------------------------------------------------------------


def spoil(root):
    """One problem of each kind in train/; returns {file that is named: words the reason holds}."""
    imgs, masks = root / "train" / "images", root / "train" / "masks"
    (masks / "train_000.png").unlink()  # no mask
    Image.fromarray(np.zeros((20, 20), np.uint8), mode="L").save(masks / "train_001.png")  # size mismatch
    bad_values = np.array(Image.open(masks / "train_002.png"))
    bad_values[0, :4] = 7
    Image.fromarray(bad_values, mode="L").save(masks / "train_002.png")  # value 7 with 3 classes
    (imgs / "train_003.png").write_bytes(b"not a png")  # unreadable image
    Image.fromarray(np.full((32, 32, 3), [10, 200, 30], np.uint8)).save(masks / "train_004.png")  # RGB mask
    return {
        str(imgs / "train_000.png"): "no mask",
        str(masks / "train_001.png"): "20x20",
        str(masks / "train_002.png"): "values 7",
        str(imgs / "train_003.png"): "cannot read image",
        str(masks / "train_004.png"): "colour image",
    }


def test_data_check_names_every_bad_sample_with_its_reason(tmp_path):
    root = make_masks_tree(tmp_path / "t")
    expected = spoil(root)
    report = check_tree(root, workers=1)
    assert not report.ok
    found = {b.path: b.reason for b in report.bad}
    assert set(found) == set(expected)
    for path, words in expected.items():
        assert words in found[path]
        assert path in report.format()
    assert report.samples == {"train": 3, "val": 4}
    assert json.loads(json.dumps(report.as_dict()))["bad"][0]["path"] in expected


def test_a_clean_tree_passes_the_check_with_counts_per_class(tmp_path):
    report = check_tree(make_masks_tree(tmp_path / "t"), workers=1)
    assert report.ok and report.bad == []
    assert report.images_with_class["train"] == [8, 8, 8]
    assert "no problems found" in report.format()


def test_training_skips_bad_samples_and_counts_them(tmp_path):
    root = make_masks_tree(tmp_path / "t")
    expected = spoil(root)
    dm = datamodule(root, batch_size=2)
    dm.setup("fit")
    with pytest.warns(UserWarning, match="skipped"):
        batches = [dm.on_before_batch_transfer(b, 0) for b in dm.train_dataloader()]
    assert all(len(b) == 2 and b[1]["mask"].max() < 3 for b in batches)
    assert {b.path for b in dm.bad_samples()} == set(expected)


def test_on_bad_image_error_lists_every_bad_sample_before_training(tmp_path):
    root = make_masks_tree(tmp_path / "t")
    expected = spoil(root)
    dm = datamodule(root, on_bad_image="error")
    with pytest.raises(UsageError) as err:
        dm.setup("fit")
    assert "5 problems in the training/validation data" in str(err.value)
    for path in expected:
        assert path in str(err.value)


def test_a_folder_in_neither_layout_is_a_usage_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UsageError, match="not a segmentation folder"):
        scan(tmp_path / "x")


# -- the demo ---------------------------------------------------------------------------------


def test_scenes_render_deterministically_with_every_class():
    image, mask = render_scene(5, 64)
    again, mask2 = render_scene(5, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and mask.shape == (64, 64)
    assert np.array_equal(image, again) and np.array_equal(mask, mask2)
    seen = set()
    for seed in range(20):
        seen |= set(np.unique(render_scene(seed, 64)[1]).tolist())
    assert seen == set(range(len(CLASS_NAMES)))


def test_the_demo_tree_is_written_once_atomically_as_a_masks_layout(tmp_path):
    tree = materialise_scenes(tmp_path / "scenes-v1", counts={"train": 6, "val": 3}, size=32)
    assert is_complete(tree) and visionkit_claim_data(tree) == "segmasks"
    assert [p.name for p in tmp_path.iterdir()] == ["scenes-v1"]  # no temporary folder left
    assert len(list((tree / "train" / "masks").glob("*.png"))) == 6
    stamp = (tree / "train" / "images" / "0000.png").stat().st_mtime_ns
    materialise_scenes(tree, counts={"train": 6, "val": 3}, size=32)
    assert (tree / "train" / "images" / "0000.png").stat().st_mtime_ns == stamp
    report = check_tree(tree, workers=1)
    assert report.ok and report.class_names == CLASS_NAMES


def test_scenes_datamodule_materialises_into_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr("visionkit_segmentation.demo.COUNTS", {"train": 4, "val": 2})
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path))
    dm = ScenesDataModule(batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    assert (tmp_path / "scenes-v1" / ".complete").is_file()
    assert dm.data_info().class_names == CLASS_NAMES and dm.image_size == 64
    assert next(iter(dm.val_dataloader()))[0].shape == (2, 3, 64, 64)


def test_sampler_balanced_weighs_each_pair_by_the_classes_its_mask_holds(tmp_path):
    root = make_masks_tree(tmp_path / "t", counts={"train": 6, "val": 2})
    dm = datamodule(root, sampler="balanced")
    dm.setup("fit")
    targets = dm.sample_targets(dm.datasets["train"])
    masks = [set(np.unique(np.asarray(Image.open(p.mask))).tolist()) for p in dm.datasets["train"].pairs]
    assert targets == [tuple(int(c in m) for c in range(3)) for m in masks]
    assert dm.train_dataloader().sampler.weights is not None
    with pytest.raises(UsageError, match="--sampler 'rare' is not one of: default, balanced"):
        datamodule(root, sampler="rare")
