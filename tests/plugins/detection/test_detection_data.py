"""Detection data read as it is: COCO and YOLO layouts, claims, bad annotations, joint box transforms.

No training here (``test_detection.py`` trains once and shares the run). The trees are real
files on disk: rendered scenes with tight boxes (``visionkit_detection.scenes``) written as
COCO JSON or YOLO label files, plus whatever breakage a test needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from det_trees import NAMES, break_coco, make_coco_tree, make_yolo_tree, scene
from PIL import Image

from visionkit_core import UsageError


def test_both_layouts_are_claimed_without_flags_and_other_layouts_are_left_alone(tmp_path: Path) -> None:
    from visionkit_core.plugin.manager import get_plugins

    plugins = get_plugins()
    coco = make_coco_tree(tmp_path / "coco", {"train": 3, "val": 2})
    yolo = make_yolo_tree(tmp_path / "yolo", {"train": 3, "val": 3})
    classes = tmp_path / "folders" / "cat"
    classes.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(classes / "a.png")
    assert plugins.claim_data(coco) == "visionkit:coco"
    assert plugins.claim_data(yolo) == "visionkit:yolo"
    assert plugins.claim_data(yolo / "data.yaml") == "visionkit:yolo"
    assert plugins.claim_data(tmp_path / "folders") == "visionkit:imagefolder"


def test_coco_class_names_come_from_the_categories_and_empty_images_are_negatives(tmp_path: Path) -> None:
    from visionkit_detection.layouts import scan

    root = make_coco_tree(tmp_path / "coco", {"train": 4, "val": 2})
    layout = scan(root)
    assert layout.kind == "coco" and layout.class_names == NAMES and not layout.problems
    train = layout.splits["train"]
    assert [Path(s.image).parent for s in train] == [root / "train"] * 4
    assert train[0].boxes == [] and train[0].labels == []  # a negative, kept
    truth = scene(1, 64)
    assert train[1].labels == truth[2]
    assert np.allclose(train[1].boxes, truth[1])  # xywh -> xyxy pixels


def test_coco_year_suffixed_files_read_their_own_image_folders(tmp_path: Path) -> None:
    from visionkit_detection.layouts import scan

    root = make_coco_tree(
        tmp_path / "c", {"train": 2, "val": 2}, split_dirs={"train": "train2017", "val": "val2017"}
    )
    layout = scan(root)
    assert sorted(layout.splits) == ["train", "val"]
    assert all(Path(s.image).parent.name == "val2017" for s in layout.splits["val"])


@pytest.mark.parametrize("names_as", ["dict", "list"])
def test_yolo_names_dict_or_list_labels_normalised_and_missing_or_empty_label_files_are_negatives(
    tmp_path: Path, names_as: str
) -> None:
    from visionkit_detection.layouts import scan

    root = make_yolo_tree(tmp_path / "y", {"train": 4, "val": 3}, names_as=names_as)
    layout = scan(root)
    assert layout.kind == "yolo" and layout.class_names == NAMES and not layout.problems
    train = layout.splits["train"]
    assert len(train) == 4 and train[0].boxes == [] and train[1].boxes == []
    boxes, labels = scene(2, 64)[1:]
    assert train[2].labels == labels and train[2].normalised
    assert np.allclose(np.array(train[2].boxes) * 64, boxes, atol=1e-3)


def test_a_yolo_polygon_line_becomes_its_bounding_box(tmp_path: Path) -> None:
    from visionkit_detection.layouts import scan

    root = make_yolo_tree(tmp_path / "y", {"train": 3, "val": 3})
    (root / "labels" / "train" / "001.txt").write_text("2 0.1 0.2 0.5 0.25 0.3 0.6\n")
    sample = scan(root).splits["train"][1]
    assert sample.labels == [2]
    assert np.allclose(sample.boxes, [[0.1, 0.2, 0.5, 0.6]])


# -- bad input ---------------------------------------------------------------------------------


def test_data_check_names_every_coco_problem_with_its_file_and_annotation_id(tmp_path: Path) -> None:
    root = make_coco_tree(tmp_path / "coco", {"train": 6, "val": 2})
    broken = break_coco(root)
    (root / "val" / "val_001.jpg").write_bytes(b"not a jpeg at all")
    out = subprocess.run(
        [sys.executable, "-m", "visionkit_core", "data", "check", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    ann = str(root / "annotations" / "instances_train.json")
    text = out.stdout
    assert (
        f"{ann}:9001: annotation id 9001 ({broken['outside']}): box [50, 10, 30, 20] (xywh) extends" in text
    )
    assert f"{ann}:9002: annotation id 9002 ({broken['zero']}): zero-area box" in text
    assert f"{ann}:9003: annotation id 9003 ({broken['unknown']}): unknown category id 99" in text
    assert f"{ann}:9004: annotation id 9004 names image id 424242, which is not in 'images'" in text
    assert "missing.jpg' not found" in text
    assert f"{root / 'val' / 'val_001.jpg'}: cannot read image" in text
    assert "train: 3 images (1 without objects)" in text  # 6 listed, 3 spoiled by their annotations


def test_data_check_and_the_claim_import_no_torch(tmp_path: Path) -> None:
    root = make_coco_tree(tmp_path / "coco", {"train": 2, "val": 1})
    code = (
        "import sys; from pathlib import Path; from visionkit_detection.check import check_tree; "
        "from visionkit_detection.plugin import visionkit_claim_data; "
        f"root = Path({str(root)!r}); assert check_tree(root, workers=1).ok; "
        "assert visionkit_claim_data(root); "
        "assert not {'torch', 'torchvision', 'lightning'} & set(sys.modules), sorted(sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_data_check_names_malformed_yolo_lines_with_file_and_line(tmp_path: Path) -> None:
    from visionkit_detection.check import check_tree

    root = make_yolo_tree(tmp_path / "y", {"train": 6, "val": 3})
    labels = root / "labels" / "train"
    (labels / "002.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5\n")
    (labels / "003.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    (labels / "004.txt").write_text("0 0.5 0.5 0.0 0.2\n0 0.95 0.5 0.3 0.2\n")
    (labels / "005.txt").write_text("cat 0.5 0.5 0.2 0.2\n")
    report = check_tree(root, workers=1)
    assert not report.ok
    found = {(Path(b.path).name, b.line): b.reason for b in report.bad}
    assert "expected 'class cx cy w h'" in found[("002.txt", 2)]
    assert "unknown class id 7" in found[("003.txt", 1)]
    assert "zero-area box" in found[("004.txt", 1)]
    assert "extends outside the image" in found[("004.txt", 2)]
    assert "values must be numbers" in found[("005.txt", 1)]
    assert report.images["train"] == 2  # the two negatives; four images spoiled
    assert report.as_dict()["bad"][0]["line"] == 2


def test_a_json_that_is_not_coco_is_named_by_data_check_and_refused_by_training(tmp_path: Path) -> None:
    from visionkit_detection.check import check_tree
    from visionkit_detection.datamodule import DetectionDataModule

    root = make_coco_tree(tmp_path / "coco", {"train": 3, "val": 2})
    (root / "annotations" / "instances_val.json").write_text(json.dumps({"info": {}, "images": []}))
    report = check_tree(root, workers=1)
    assert not report.ok
    assert any(
        b.path.endswith("instances_val.json") and "not a COCO instances file" in b.reason for b in report.bad
    )
    with pytest.raises(UsageError, match=r"instances_val.json: not a COCO instances file \(no 'annotations'"):
        DetectionDataModule(root).setup("fit")


def test_training_leaves_out_and_counts_images_with_bad_annotations(tmp_path: Path) -> None:
    from visionkit_detection.datamodule import DetectionDataModule

    root = make_coco_tree(tmp_path / "coco", {"train": 8, "val": 2})
    broken = break_coco(root)
    dm = DetectionDataModule(root, batch_size=4, image_size=64)
    with pytest.warns(UserWarning, match="left out 4 images with unusable annotations"):
        dm.setup("fit")
    used = {Path(s.image).name for s in dm.datasets["train"].samples}
    assert len(used) == 8 - 3 and not used & set(broken.values())
    skipped = {Path(b.path).name: b.reason for b in dm.bad_samples()}
    assert (
        "annotation id 9003" in skipped[broken["unknown"]]
        and "instances_train.json:9003" in skipped[broken["unknown"]]
    )
    assert "missing.jpg" in skipped and "instances_train.json" in skipped  # the orphan annotation


def test_on_bad_image_error_stops_before_training_listing_the_problems(tmp_path: Path) -> None:
    from visionkit_detection.datamodule import DetectionDataModule

    root = make_coco_tree(tmp_path / "coco", {"train": 8, "val": 2})
    break_coco(root)
    (root / "val" / "val_001.jpg").write_bytes(b"\xff\xd8 truncated")
    dm = DetectionDataModule(root, batch_size=4, image_size=64, on_bad_image="error")
    with pytest.raises(UsageError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "6 problems" in message and "--on-bad-image error" in message
    for ref in (":9001:", ":9002:", ":9003:", ":9004:", "missing.jpg", "val_001.jpg: cannot read image"):
        assert ref in message


def test_an_unreadable_image_is_replaced_and_counted_while_loading(tmp_path: Path) -> None:
    from visionkit_detection.datamodule import DetectionDataModule

    root = make_coco_tree(tmp_path / "coco", {"train": 6, "val": 2})
    (root / "train" / "train_003.jpg").write_bytes(b"garbage")
    dm = DetectionDataModule(root, batch_size=6, image_size=64)
    dm.setup("fit")
    images, targets, skipped = next(iter(dm.train_dataloader()))
    assert len(images) == len(targets) == 6 and all(im.shape == (3, 64, 64) for im in images)
    with pytest.warns(UserWarning, match="train_003.jpg"):
        dm.on_before_batch_transfer((images, targets, skipped), 0)
    assert [Path(b.path).name for b in dm.bad_samples()] == ["train_003.jpg"]


# -- transforms and batches --------------------------------------------------------------------


def _object_pixels(image: torch.Tensor) -> np.ndarray:
    return image.numpy().max(axis=0) > 128  # bright objects on a black background


def test_train_transforms_move_boxes_with_the_image_clip_them_and_drop_degenerate_ones() -> None:
    from torchvision import tv_tensors
    from visionkit_detection.data import train_transform

    s = 64
    image = torch.zeros(3, s, s, dtype=torch.uint8)
    boxes = [[4, 6, 20, 30], [40, 40, 60, 50], [0, 58, 3, 64]]
    for x0, y0, x1, y1 in boxes:
        image[:, y0:y1, x0:x1] = 255
    transform = train_transform(s, (0.5, 1.5))
    dropped = 0
    for seed in range(40):
        torch.manual_seed(seed)
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY",
                                              canvas_size=(s, s)),
            "labels": torch.tensor([0, 1, 2]),
            "iscrowd": torch.zeros(3, dtype=torch.int64),
        }  # fmt: skip
        out, t = transform(image, target)
        assert out.shape == (3, s, s) and len(t["boxes"]) == len(t["labels"]) == len(t["iscrowd"])
        got = t["boxes"].as_subclass(torch.Tensor)
        assert (got >= 0).all() and (got <= s).all()  # clipped to the image
        assert ((got[:, 2] - got[:, 0]) >= 1).all() and ((got[:, 3] - got[:, 1]) >= 1).all()
        dropped += 3 - len(got)
        mask = _object_pixels(out)
        for x0, y0, x1, y1 in got.round().int().tolist():  # each box still frames bright pixels...
            if min(x1 - x0, y1 - y0) >= 4:  # (the edges of smaller ones are all blur)
                assert mask[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].mean() > 0.9
        covered = np.zeros_like(mask)
        for x0, y0, x1, y1 in got.round().int().tolist():
            covered[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = True
        # ...and no object pixel is outside every box (but slivers of boxes dropped as degenerate)
        assert (mask & ~covered).sum() <= s // 8
    assert dropped > 0  # crops cut some boxes to nothing: they went, with their labels


def test_eval_letterbox_keeps_the_aspect_and_scales_boxes(tmp_path: Path) -> None:
    from visionkit_detection.data import DetectionDataset, eval_transform, predict_images
    from visionkit_detection.layouts import Sample

    wide = np.zeros((100, 200, 3), np.uint8)
    wide[20:60, 100:180] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    sample = Sample(str(tmp_path / "wide.png"), boxes=[[100.0, 20.0, 180.0, 60.0]], labels=[1], crowd=[False])
    image, target, _ = DetectionDataset([sample], eval_transform(64))[0]
    assert image.shape == (3, 64, 64)
    assert torch.allclose(target["boxes"], torch.tensor([[32.0, 6.4, 57.6, 19.2]]))
    assert image[:, 33:, :].max() == 0  # padded at the bottom
    item = predict_images([tmp_path / "wide.png"], 64)[0]
    assert item["size"] == (100, 200) and item["ok"] and torch.equal(item["image"], image)


def test_batches_of_variable_size_images_collate_as_lists(tmp_path: Path) -> None:
    from visionkit_detection.data import collate_detection, predict_images

    for i, (h, w) in enumerate([(30, 50), (70, 20)]):
        Image.fromarray(np.full((h, w, 3), 40, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    dataset = predict_images([tmp_path / "0.png", tmp_path / "1.png", tmp_path / "bad.png"], 64)
    batch = dataset.collate_fn([dataset[i] for i in range(3)])
    assert isinstance(batch["image"], list) and batch["size"] == [(30, 50), (70, 20), (64, 64)]
    assert batch["ok"].tolist() == [True, True, False]
    images = [torch.zeros(3, 10, 20), torch.zeros(3, 30, 5)]
    targets = [{"boxes": torch.zeros(0, 4)}, {"boxes": torch.ones(1, 4)}]
    got = collate_detection([(images[0], targets[0], ()), (images[1], targets[1], (("x", "y"),))])
    assert got[0][1].shape == (3, 30, 5) and got[1][1]["boxes"].shape == (1, 4) and got[2] == [("x", "y")]


def test_the_demo_tree_is_materialised_once_in_the_coco_layout_and_passes_data_check(tmp_path: Path) -> None:
    from visionkit_detection.check import check_tree
    from visionkit_detection.demo import materialise_shapes

    from visionkit_core.kit.demo import is_complete

    tree = materialise_shapes(tmp_path / "shapes", counts={"train": 6, "val": 3}, size=48)
    assert is_complete(tree) and (tree / "annotations" / "instances_train.json").is_file()
    stamp = (tree / "train" / "00000.png").stat().st_mtime_ns
    materialise_shapes(tmp_path / "shapes", counts={"train": 6, "val": 3}, size=48)
    assert (tree / "train" / "00000.png").stat().st_mtime_ns == stamp  # not rendered again
    report = check_tree(tree, workers=1)
    assert report.ok and report.layout == "coco" and report.class_names == NAMES
    assert report.images == {"train": 6, "val": 3}


def test_sampler_balanced_weighs_images_by_the_classes_they_hold(tmp_path: Path) -> None:
    from visionkit_detection.datamodule import DetectionDataModule

    root = make_coco_tree(tmp_path / "coco", {"train": 6, "val": 2}, negatives=1)
    dm = DetectionDataModule(root, batch_size=2, image_size=64, num_workers=0, sampler="balanced")
    dm.setup("fit")
    ds = dm.datasets["train"]
    targets = dm.sample_targets(ds)
    assert targets == [tuple(int(c in s.labels) for c in range(len(targets[0]))) for s in ds.samples]
    assert any(not any(t) for t in targets)  # the negative image forms a group of its own
    assert dm.train_dataloader().sampler.weights is not None
