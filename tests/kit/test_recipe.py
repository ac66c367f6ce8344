"""The kit's dense recipe: targets follow the image through mosaic, jitter and flips; close-mosaic."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor
from torchvision import tv_tensors

from visionkit_core import UsageError
from visionkit_core.kit import recipe as R
from visionkit_core.kit.skips import UnusableSample


def tile(i: int, h: int = 40, w: int = 48) -> R.Sample:
    """One object: a box filled with grey level 50 (i + 1), mask value i + 1, two corner keypoints."""
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[:, 10:30, 12:36] = 50 * (i + 1)
    mask = torch.zeros(h, w, dtype=torch.uint8)
    mask[10:30, 12:36] = i + 1
    return R.as_sample(
        image,
        boxes=tv_tensors.BoundingBoxes(
            torch.tensor([[12.0, 10.0, 36.0, 30.0]]), format="XYXY", canvas_size=(h, w)
        ),
        labels=torch.tensor([i]),
        mask=tv_tensors.Mask(mask),
        keypoints=tv_tensors.KeyPoints(torch.tensor([[[12.0, 10.0], [35.0, 29.0]]]), canvas_size=(h, w)),
        visibility=torch.ones(1, 2),
        image_id=torch.tensor(i),
    )


def check_consistent(sample: R.Sample) -> None:
    """Every box still frames its own object: pixels and mask inside it belong to its label."""
    for box, label in zip(sample["boxes"].tolist(), sample["labels"].tolist(), strict=True):
        x0, y0, x1, y1 = (round(v) for v in box)
        inner = (slice(y0 + 1, y1 - 1), slice(x0 + 1, x1 - 1))
        assert set(sample["mask"][inner].unique().tolist()) == {label + 1}
        assert abs(sample["image"][0][inner].float().mean().item() - 50 * (label + 1)) < 3


def test_mosaic_puts_four_samples_with_their_targets_on_one_canvas() -> None:
    out = R.mosaic4([tile(i) for i in range(4)], 48, centre=(48, 48))
    assert out["image"].shape == (3, 96, 96) and out["mask"].shape == (96, 96)
    assert out["boxes"].canvas_size == (96, 96) and out["labels"].tolist() == [0, 1, 2, 3]
    assert out["keypoints"].shape == (4, 2, 2) and out["visibility"].shape == (4, 2)
    assert out["image_id"].item() == 0  # per-sample values: the first tile's
    # tile 0 ends at the centre (its 40 x 48 image sits at (0, 8)); tile 3 starts there
    assert out["boxes"][0].tolist() == [12.0, 18.0, 36.0, 38.0]
    assert out["boxes"][3].tolist() == [60.0, 58.0, 84.0, 78.0]
    assert out["keypoints"][3, 0].tolist() == [60.0, 58.0]
    check_consistent(out)


def test_jitter_and_crop_keep_targets_with_their_objects_and_drop_the_lost_ones() -> None:
    torch.manual_seed(3)
    seen_dropped = False
    for _ in range(8):
        out = R.mosaic4([tile(i) for i in range(4)], 48)
        out = R.sanitize(R.random_affine(out, (0.5, 1.5), 0.2, 48))
        assert out["image"].shape == (3, 48, 48) and out["boxes"].canvas_size == (48, 48)
        n = len(out["boxes"])
        assert len(out["labels"]) == len(out["keypoints"]) == len(out["visibility"]) == n
        seen_dropped |= n < 4
        check_consistent(out)
        # a keypoint outside the image is invisible; a visible one is inside
        xy = out["keypoints"]
        inside = (xy[..., 0] >= 0) & (xy[..., 0] < 48) & (xy[..., 1] >= 0) & (xy[..., 1] < 48)
        assert bool((out["visibility"] <= inside.float()).all())
    assert seen_dropped


def test_flip_moves_every_target_and_swaps_left_and_right_keypoints() -> None:
    sample = tile(0)
    sample["visibility"] = torch.tensor([[1.0, 0.0]])
    flipped = R.HorizontalFlip(1.0, flip_index=[1, 0])(sample)
    assert flipped["boxes"].tolist() == [[12.0, 10.0, 36.0, 30.0]]  # 48 - 36 = 12: symmetric box
    assert torch.equal(flipped["mask"], sample["mask"].flip(-1))
    # the right corner (35, 29) is now the first point, mirrored; visibility travels with it
    assert flipped["keypoints"][0, 0, 1].item() == 29.0 and flipped["keypoints"][0, 1, 1].item() == 10.0
    assert flipped["visibility"].tolist() == [[0.0, 1.0]]
    assert R.HorizontalFlip(0.0)(sample) is sample


def test_recipe_options_are_checked() -> None:
    assert R.DenseRecipe().problems() == []
    problems = R.DenseRecipe(mosaic=1.5, scale_min=2.0, scale_max=1.0, close_mosaic=-1).problems()
    assert len(problems) == 3 and any("data.mosaic" in p for p in problems)


class Tiles(R.RecipeDataset):
    def read_sample(self, index: int) -> R.Sample:
        if index == 5:
            raise UnusableSample(f"img{index}.png", "cannot read image")
        return tile(index % 4)

    def finish(self, sample: R.Sample, index: int) -> tuple[Any, ...]:
        return sample["image"].as_subclass(Tensor), sample["labels"], sample["boxes"].as_subclass(Tensor)


def test_close_mosaic_follows_the_epoch_in_the_key_and_samples_repeat_exactly() -> None:
    data = Tiles(list(range(6)), 48, R.DenseRecipe(mosaic=1.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0))
    data.set_close_mosaic(max_epochs=100)  # close_mosaic 10
    assert data.mosaic_until == 90
    data.set_close_mosaic(max_epochs=8)  # at most a quarter of the run: epochs 0 and 1 draw mosaics
    assert data.mosaic_until == 6
    data.set_close_mosaic(max_epochs=2)
    assert data.mosaic_until == 2
    sampler = R.EpochKeySampler(len(data), seed=7)
    sampler.set_epoch(1)
    keys = list(sampler)
    assert all(len(k) == 3 and k[2] == 1 for k in keys)
    mosaic_counts = [len(data[k][1]) for k in keys if k[0] != 5]
    assert max(mosaic_counts) > 1  # objects from several tiles
    again = data[keys[0]]
    first = data[keys[0]]
    assert all(torch.equal(a, b) for a, b in zip(again[:3], first[:3], strict=True))
    sampler.set_epoch(2)
    late = [data[k] for k in sampler]
    assert all(len(item[1]) <= 1 for item in late)  # one image each: mosaics closed
    # the unreadable sample is replaced and reported, never used as a mosaic tile
    assert any(item[-1] for item in late)


def test_a_dataset_with_no_readable_sample_says_so() -> None:
    class Broken(Tiles):
        def read_sample(self, index: int) -> R.Sample:
            raise UnusableSample(f"img{index}.png", "cannot read image")

    with pytest.raises(UsageError, match="none of the 2 samples"):
        Broken([0, 1], 48, R.DenseRecipe())[(0, 1, 0)]


def test_multi_scale_sizes_depend_on_the_step_only_and_targets_follow() -> None:
    sizes = [R.multi_scale_size(320, 0.5, step) for step in range(40)]
    assert sizes == [R.multi_scale_size(320, 0.5, step) for step in range(40)]
    assert all(s % 32 == 0 and 160 <= s <= 480 for s in sizes) and len(set(sizes)) > 3
    assert R.multi_scale_size(320, 0.0, 7) == 320
    images = [torch.rand(3, 64, 64)]
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 8:24, 16:48] = 1
    targets = [{"boxes": torch.tensor([[16.0, 8.0, 48.0, 24.0]]), "labels": torch.tensor([2]), "masks": mask}]
    out_images, out_targets = R.rescale_batch(images, targets, 96)
    assert out_images[0].shape == (3, 96, 96)
    assert out_targets[0]["boxes"].tolist() == [[24.0, 12.0, 72.0, 36.0]]
    assert out_targets[0]["labels"].tolist() == [2] and out_targets[0]["masks"].shape == (1, 96, 96)
    assert out_targets[0]["masks"].sum().item() == 48 * 24


def test_the_cache_keeps_decoded_samples_within_its_budget() -> None:
    reads: list[int] = []

    class Counted(Tiles):
        def read_sample(self, index: int) -> R.Sample:
            reads.append(index)
            return tile(index)

    one = sum(v.numel() * v.element_size() for v in tile(0).values() if isinstance(v, Tensor))
    data = Counted([0, 1, 2], 48, None, cache_bytes=2 * one)  # room for two samples
    first = [data[(i, 5)] for i in range(3)]
    again = [data[(i, 5)] for i in range(3)]
    assert reads == [0, 1, 2, 2]  # the third did not fit: read again
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert R.cache_budget("none", 0) == 0
    assert 0 < R.cache_budget("auto", 2) <= 256 * 2**20  # 512 MiB shared by 2 workers
    assert R.cache_budget("ram", 1) >= R.cache_budget("auto", 1)
