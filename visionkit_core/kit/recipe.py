"""The dense-task training recipe as parts: mosaic, scale/translate jitter, HSV jitter, flips,
close-mosaic, on torchvision v2 transforms and ``tv_tensors``.

Every part works on a *sample*: a flat dict holding an ``"image"`` (uint8 ``(3, H, W)``,
wrapped as ``tv_tensors.Image``) and whatever targets the task has, as ``tv_tensors``:
``BoundingBoxes`` (any format), ``Mask`` (a semantic ``(H, W)`` mask, or per-object ``(N, H, W)``
masks, one per box), ``KeyPoints`` (``(N, K, 2)``, one row of K points per object), and plain
per-object tensors (``labels``, ``iscrowd``, a keypoint ``visibility (N, K)``...: any tensor
whose first dimension is the number of objects). Geometric parts move every target with the
image (torchvision's kernels: boxes and points transformed, masks with nearest-neighbour);
objects that leave the image are dropped with all their per-object tensors
(:func:`sanitize`); keypoints outside the image keep their place but their ``visibility``
becomes 0. So detection, instance and semantic segmentation and keypoints share one recipe.

- :func:`mosaic4`: four samples on a ``2S x 2S`` canvas around a random centre.
- :func:`random_affine`: scale and translate jitter (one draw for all targets), optionally
  cropping the centre ``S x S`` (after a mosaic).
- :func:`letterbox`: the longer side to ``S`` (aspect kept), padded right/bottom to a square.
- :func:`colour_jitter`: HSV jitter (``v2.ColorJitter``: hue, saturation, value/brightness).
- :class:`HorizontalFlip`: a flip that also swaps left/right keypoints (``flip_index``).
- :class:`DenseRecipe`: the options (on by default where they pay; recorded in config.yaml).
- :class:`RecipeDataset` and :class:`EpochKeySampler`: a seeded dataset that builds mosaics
  from other samples and stops in the last ``close_mosaic`` epochs. The sampler tags each key
  with its epoch, so the switch is a function of ``(seed, epoch)``: exact under ``--resume``,
  with persistent DataLoader workers, under DDP. :class:`RecipeDataModule`: the datamodule base
  over them (close-mosaic from the run's epochs, ``--set data.cache``).

Randomness comes from torch's default generator, which :class:`~visionkit_core.kit.data.SeededDataset`
seeds per sample.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from visionkit_core.kit.data import SeededDataModule, SeededDataset
from visionkit_core.kit.sampler import EpochSeededSampler

Sample = dict[str, Any]
#: Keys of plain per-keypoint tensors (``(N, K)``): reordered by a flip, zeroed outside the image.
VISIBILITY_KEYS = ("visibility",)


# -- options ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DenseRecipe:
    """The augmentation recipe of a dense task (each a data option: ``--set data.<name>=...``).

    Args:
        mosaic: probability that a training sample is a mosaic of four (0 turns it off).
        close_mosaic: no mosaics in the last this-many epochs, at most a quarter of the run
            (the model sees whole images before it is validated and exported).
        scale_min, scale_max: scale jitter: each sample is scaled by a factor drawn from
            ``[scale_min, scale_max]``.
        translate: translation jitter, as a share of the image side, each way.
        hsv_h, hsv_s, hsv_v: colour jitter: hue shift (share of the hue circle), saturation and
            value (brightness) factors in ``[1 - x, 1 + x]``.
        fliplr: probability of a horizontal flip.
    """

    mosaic: float = 1.0
    close_mosaic: int = 10
    scale_min: float = 0.5
    scale_max: float = 1.5
    translate: float = 0.1
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5

    def problems(self, prefix: str = "data.") -> list[str]:
        """What is out of range, one line each (for the datamodule's ``UsageError``)."""
        out = []
        for name in ("mosaic", "fliplr"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                out.append(f"{prefix}{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.scale_min <= self.scale_max <= 4.0:
            out.append(
                f"{prefix}scale_min/scale_max must satisfy 0 < min <= max <= 4, "
                f"got {self.scale_min}, {self.scale_max}"
            )
        for name, high in (
            ("translate", 0.5),
            ("hsv_h", 0.5),
            ("hsv_s", 1.0),
            ("hsv_v", 1.0),
        ):
            if not 0.0 <= getattr(self, name) <= high:
                out.append(f"{prefix}{name} must be in [0, {high}], got {getattr(self, name)}")
        if self.close_mosaic < 0:
            out.append(f"{prefix}close_mosaic must be at least 0, got {self.close_mosaic}")
        return out

    @property
    def scales(self) -> tuple[float, float]:
        return (self.scale_min, self.scale_max)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- samples ----------------------------------------------------------------------------------


def as_sample(image: Tensor, **targets: Any) -> Sample:
    """A sample dict: ``image`` wrapped as ``tv_tensors.Image``, the targets as given."""
    return {"image": tv_tensors.Image(image), **targets}


def num_objects(sample: Mapping[str, Any]) -> int | None:
    """Objects in ``sample``: its boxes, else its keypoint rows; None when it has neither."""
    for kind in (tv_tensors.BoundingBoxes, tv_tensors.KeyPoints):
        for value in sample.values():
            if isinstance(value, kind):
                return int(value.shape[0])
    return None


def _per_object(value: Any, n: int | None) -> bool:
    """Whether ``value`` holds one row per object (boxes, keypoints, instance masks, labels...)."""
    if isinstance(value, (tv_tensors.BoundingBoxes, tv_tensors.KeyPoints)):
        return True
    if n is None or not isinstance(value, Tensor) or value.ndim == 0:
        return False
    if isinstance(value, tv_tensors.Mask):
        return value.ndim == 3 and int(value.shape[0]) == n
    return not isinstance(value, tv_tensors.Image) and int(value.shape[0]) == n


def _is_raster(value: Any) -> bool:
    return isinstance(value, (tv_tensors.Image, tv_tensors.Mask))


def image_size(sample: Mapping[str, Any]) -> tuple[int, int]:
    h, w = sample["image"].shape[-2:]
    return int(h), int(w)


def _fill(value: Any, n: int | None, mask_fill: int) -> int:
    """Padding value: 0 for images and per-object masks, ``mask_fill`` for a semantic mask."""
    if isinstance(value, tv_tensors.Mask) and not _per_object(value, n):
        return mask_fill
    return 0


def _apply(sample: Sample, fn: Any, mask_fill: int = 0) -> Sample:
    """``fn(value, fill)`` on every tv_tensor of ``sample``; plain tensors pass through."""
    n = num_objects(sample)
    return {
        k: fn(v, _fill(v, n, mask_fill)) if isinstance(v, tv_tensors.TVTensor) else v
        for k, v in sample.items()
    }


# -- geometric parts ------------------------------------------------------------------------------


def resize_longer(sample: Sample, size: int) -> Sample:
    """Scale so the longer side is ``size`` (aspect kept); every target follows."""
    h, w = image_size(sample)
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return sample
    return _apply(sample, lambda v, fill: F.resize(v, [nh, nw], antialias=True))


def pad_to(sample: Sample, height: int, width: int, mask_fill: int = 0) -> Sample:
    """Pad right and bottom to ``height x width`` (black; ``mask_fill`` in a semantic mask)."""
    h, w = image_size(sample)
    if (h, w) == (height, width):
        return sample
    padding = [0, 0, width - w, height - h]
    return _apply(sample, lambda v, fill: F.pad(v, padding, fill=fill), mask_fill)


def letterbox(sample: Sample, size: int, mask_fill: int = 0) -> Sample:
    """The longer side to ``size`` (aspect kept), padded right/bottom to ``size x size``."""
    return pad_to(resize_longer(sample, size), size, size, mask_fill)


def _place(
    value: Any, region: tuple[int, int, int, int], origin: tuple[int, int], canvas: int, fill: int
) -> Any:
    """The part of ``value`` that falls into canvas ``region`` (x0, y0, x1, y1) when the image's
    top-left corner sits at canvas ``origin``; returned on the whole ``canvas x canvas``."""
    x0, y0, x1, y1 = region
    ox, oy = origin
    h, w = (
        value.canvas_size
        if isinstance(value, (tv_tensors.BoundingBoxes, tv_tensors.KeyPoints))
        else value.shape[-2:]
    )
    # the region in the image's own pixels, clipped to the image
    left, top = max(0, x0 - ox), max(0, y0 - oy)
    right, bottom = min(int(w), x1 - ox), min(int(h), y1 - oy)
    width, height = max(0, right - left), max(0, bottom - top)
    if width == 0 or height == 0:  # nothing of this image shows: an empty crop of its corner
        left, top, width, height = 0, 0, 1, 1
        out = F.crop(value, top, left, height, width)
        if _is_raster(out):
            return F.pad(out, [0, 0, canvas - 1, canvas - 1], fill=fill).fill_(fill)
        return F.pad(out, [canvas, canvas, 0, 0], fill=fill)  # points and boxes land outside
    out = F.crop(value, top, left, height, width)
    px, py = ox + left, oy + top
    return F.pad(out, [px, py, canvas - px - width, canvas - py - height], fill=fill)


def mosaic4(
    tiles: Sequence[Sample], size: int, centre: tuple[int, int] | None = None, mask_fill: int = 0
) -> Sample:
    """Four samples on a ``2 size`` square canvas, meeting at ``centre`` (random in the middle half).

    Each tile is first scaled so its longer side is ``size``; tile 0 fills the top-left
    quadrant up to the centre, 1 the top-right, 2 the bottom-left, 3 the bottom-right. Rasters
    (image, semantic mask) are cut at the centre; per-object targets are cropped to their
    quadrant (boxes clipped, points outside it made invisible) and concatenated.
    """
    if len(tiles) != 4:
        raise ValueError(f"mosaic4 takes 4 samples, got {len(tiles)}")
    canvas = 2 * size
    if centre is None:
        low, high = size // 2, canvas - size // 2
        xc, yc = (int(v) for v in torch.randint(low, high + 1, (2,)).tolist())
    else:
        xc, yc = centre
    tiles = [resize_longer(dict(t), size) for t in tiles]
    placed: list[tuple[Sample, tuple[int, int, int, int]]] = []
    for i, tile in enumerate(tiles):
        h, w = image_size(tile)
        right, lower = i % 2 == 1, i >= 2
        region = (xc if right else 0, yc if lower else 0, canvas if right else xc, canvas if lower else yc)
        origin = (xc if right else xc - w, yc if lower else yc - h)
        n = num_objects(tile)
        out = {
            k: _place(v, region, origin, canvas, _fill(v, n, mask_fill))
            if isinstance(v, tv_tensors.TVTensor)
            else v
            for k, v in tile.items()
        }
        _hide_points_outside(out, region)
        placed.append((out, region))
    return _merge(placed, tiles)


def _merge(placed: list[tuple[Sample, tuple[int, int, int, int]]], tiles: list[Sample]) -> Sample:
    first = placed[0][0]
    counts = [num_objects(t) for t in tiles]
    merged: Sample = {}
    for key, value in first.items():
        if _is_raster(value) and not _per_object(value, num_objects(first)):
            canvas = value.clone()
            for sample, (x0, y0, x1, y1) in placed[1:]:
                canvas[..., y0:y1, x0:x1] = sample[key][..., y0:y1, x0:x1]
            merged[key] = canvas
        elif all(_per_object(sample.get(key), n) for (sample, _), n in zip(placed, counts, strict=True)):
            parts = [sample[key] for sample, _ in placed]
            joined = torch.cat([p.as_subclass(Tensor) for p in parts])
            merged[key] = (
                tv_tensors.wrap(joined, like=value) if isinstance(value, tv_tensors.TVTensor) else joined
            )
        else:
            merged[key] = value  # per-sample values (an id): the first tile's
    return merged


def _hide_points_outside(sample: Sample, region: tuple[int, int, int, int]) -> None:
    """Zero the visibility of keypoints outside ``region`` (x0, y0, x1, y1), in place."""
    x0, y0, x1, y1 = region
    for value in sample.values():
        if isinstance(value, tv_tensors.KeyPoints):
            x, y = value[..., 0], value[..., 1]
            inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
            for key in VISIBILITY_KEYS:
                vis = sample.get(key)
                if isinstance(vis, Tensor) and vis.shape == inside.shape:
                    sample[key] = torch.where(inside, vis, torch.zeros_like(vis))


def random_affine(
    sample: Sample,
    scale: tuple[float, float],
    translate: float,
    out_size: int | None = None,
    mask_fill: int = 0,
) -> Sample:
    """Scale by a factor drawn from ``scale`` (low, high) and shift by up to ``translate`` of the
    side each way, about the image centre (one draw for the image and all targets); then, with ``out_size``,
    keep the centre ``out_size`` square (a mosaic canvas becomes one training image)."""
    h, w = image_size(sample)
    factor = scale[0] + torch.rand(()).item() * (scale[1] - scale[0])
    tx = (torch.rand(()).item() * 2 - 1) * translate * w
    ty = (torch.rand(()).item() * 2 - 1) * translate * h

    def move(value: Any, fill: int) -> Any:
        extra = {"interpolation": InterpolationMode.BILINEAR} if isinstance(value, tv_tensors.Image) else {}
        out = F.affine(value, angle=0.0, translate=[round(tx), round(ty)], scale=factor, shear=[0.0, 0.0],
                       fill=fill, **extra)  # fmt: skip
        return F.center_crop(out, [out_size, out_size]) if out_size else out

    moved = _apply(sample, move, mask_fill)
    if out_size:
        _hide_points_outside(moved, (0, 0, out_size, out_size))
    return moved


def sanitize(sample: Sample, min_size: float = 1.0) -> Sample:
    """Clip boxes to the image and drop objects whose box is under ``min_size`` pixels wide or
    tall, with every per-object tensor; keypoints outside the image become invisible."""
    h, w = image_size(sample)
    _hide_points_outside(sample, (0, 0, w, h))
    boxes_key = next((k for k, v in sample.items() if isinstance(v, tv_tensors.BoundingBoxes)), None)
    if boxes_key is None:
        return sample
    boxes = F.clamp_bounding_boxes(sample[boxes_key])
    xyxy = F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
    keep = ((xyxy[:, 2] - xyxy[:, 0]) >= min_size) & ((xyxy[:, 3] - xyxy[:, 1]) >= min_size)
    n = int(boxes.shape[0])
    out: Sample = {}
    for key, value in {**sample, boxes_key: boxes}.items():
        if _per_object(value, n):
            kept = value.as_subclass(Tensor)[keep]
            out[key] = tv_tensors.wrap(kept, like=value) if isinstance(value, tv_tensors.TVTensor) else kept
        else:
            out[key] = value
    return out


# -- photometric parts and flips ---------------------------------------------------------------------


def colour_jitter(hsv_h: float, hsv_s: float, hsv_v: float) -> v2.Transform | None:
    """HSV jitter: hue shift up to ``hsv_h``, saturation and value factors in ``[1 - x, 1 + x]``
    (``v2.ColorJitter``; targets pass through). None when all three are 0."""
    if not (hsv_h or hsv_s or hsv_v):
        return None
    return v2.ColorJitter(brightness=hsv_v or None, saturation=hsv_s or None, hue=hsv_h or None)


class HorizontalFlip(v2.Transform):
    """A horizontal flip with probability ``p`` that keeps keypoints' left and right straight.

    torchvision flips every ``tv_tensor`` (boxes, masks, points). A left eye then sits where
    the right one was: with ``flip_index`` (YOLO-pose's ``flip_idx``: the index each keypoint
    becomes) the keypoint rows and their ``visibility`` are reordered to match.
    """

    def __init__(self, p: float = 0.5, flip_index: Sequence[int] | None = None) -> None:
        super().__init__()
        self.p = float(p)
        self.flip_index = list(flip_index) if flip_index is not None else None

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        if self.p <= 0 or torch.rand(()).item() >= self.p:
            return sample
        flipped = v2.RandomHorizontalFlip(p=1.0)(sample)
        if self.flip_index is not None:
            for target in _dicts(flipped):
                self._swap(target)
        return flipped

    def _swap(self, target: dict[str, Any]) -> None:
        index = torch.as_tensor(self.flip_index)
        for key, value in list(target.items()):
            if isinstance(value, tv_tensors.KeyPoints) and value.ndim >= 3:
                target[key] = tv_tensors.wrap(value.as_subclass(Tensor)[:, index], like=value)
            elif key in VISIBILITY_KEYS and isinstance(value, Tensor) and value.ndim == 2:
                target[key] = value[:, index]


def _dicts(structure: Any) -> Iterator[dict[str, Any]]:
    if isinstance(structure, dict):
        yield structure
    elif isinstance(structure, (tuple, list)):
        for item in structure:
            if isinstance(item, dict):
                yield item


# -- the dataset and sampler ------------------------------------------------------------------------


class EpochKeySampler(EpochSeededSampler):
    """:class:`EpochSeededSampler` whose keys carry the epoch: ``(index, sample_seed, epoch)``.

    The epoch is known in the main process (Lightning calls ``set_epoch``); tagged keys carry it
    to DataLoader workers, so a dataset can change its recipe by epoch (close-mosaic) even with
    persistent workers, and a resumed run does exactly what an uninterrupted one did.
    """

    def __iter__(self) -> Iterator[tuple[int, int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((index, seed, epoch) for index, seed in super().__iter__())


class RecipeDataset(SeededDataset):
    """A seeded dataset that applies :class:`DenseRecipe`: mosaics from other samples, scale and
    translate jitter, HSV jitter, flips, sanitising; no mosaics from ``mosaic_until`` on.

    A subclass implements :meth:`read_sample` (index -> the untransformed sample dict, raise
    ``UnusableSample`` when it cannot be used) and :meth:`finish` (the transformed sample -> the
    tuple the collate function takes). ``transform`` (a callable on a sample) replaces the
    recipe entirely (validation: ``letterbox`` or a resize).

    Args:
        samples: what :meth:`read_sample` reads.
        size: the side of the square training image.
        recipe: the options; ``None``: no augmentation, :meth:`plain` only.
        flip_index: keypoints' left/right swap for :class:`HorizontalFlip`.
        mask_fill: padding value of a semantic mask (255: ignored by the loss).
        on_bad_image: ``"skip"`` or ``"error"``.
        cache_bytes: keep decoded samples in memory up to this many bytes (0: none); see
            :func:`cache_budget`. A mosaic reads four samples, so small data sets gain most.
    """

    def __init__(
        self,
        samples: Sequence[Any],
        size: int,
        recipe: DenseRecipe | None,
        *,
        flip_index: Sequence[int] | None = None,
        mask_fill: int = 0,
        on_bad_image: str = "skip",
        cache_bytes: int = 0,
    ) -> None:
        super().__init__(samples, on_bad_image)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, Sample] = {}
        self._cached = 0
        self.size = int(size)
        self.recipe = recipe
        self.mask_fill = int(mask_fill)
        #: the first epoch without mosaics (``max_epochs - close_mosaic``; None: never stop)
        self.mosaic_until: int | None = None
        self.epoch = 0
        self.colour = colour_jitter(recipe.hsv_h, recipe.hsv_s, recipe.hsv_v) if recipe else None
        self.flip = HorizontalFlip(recipe.fliplr, flip_index) if recipe and recipe.fliplr else None

    # -- for subclasses -----------------------------------------------------------------------
    def read_sample(self, index: int) -> Sample:
        """The untransformed sample ``index`` (see the module docstring); raise ``UnusableSample``."""
        raise NotImplementedError

    def finish(self, sample: Sample, index: int) -> tuple[Any, ...]:
        """The transformed ``sample`` as the tuple the collate function takes."""
        raise NotImplementedError

    def plain(self, sample: Sample) -> Sample:
        """The sample without augmentation (validation): letterboxed to :attr:`size`."""
        return letterbox(sample, self.size, self.mask_fill)

    def single(self, sample: Sample) -> Sample:
        """A training sample that is not a mosaic: letterboxed to :attr:`size`, then scale and
        translate jitter (override for another geometry, e.g. a random resized crop)."""
        assert self.recipe is not None
        sample = letterbox(sample, self.size, self.mask_fill)
        return random_affine(sample, self.recipe.scales, self.recipe.translate, None, self.mask_fill)

    def read_cached(self, index: int) -> Sample:
        """:meth:`read_sample`, kept in memory while :attr:`cache_bytes` allows (per process)."""
        cached = self._cache.get(index)
        if cached is not None:
            return dict(cached)  # the parts never change a tensor in place; the dict may change
        sample = self.read_sample(index)
        if self.cache_bytes:
            size = sum(v.numel() * v.element_size() for v in sample.values() if isinstance(v, Tensor))
            if self._cached + size <= self.cache_bytes:
                self._cache[index] = dict(sample)
                self._cached += size
        return sample

    # -- the recipe ------------------------------------------------------------------------------
    def set_close_mosaic(self, max_epochs: int | None) -> None:
        """Stop mosaics ``recipe.close_mosaic`` epochs (at most a quarter of the run) before
        ``max_epochs`` (None: never stop)."""
        closing = self.recipe.close_mosaic if self.recipe is not None else 0
        self.mosaic_until = close_mosaic_epoch(max_epochs, closing)

    def mosaic_on(self) -> bool:
        """Whether mosaics are drawn in the current epoch."""
        if self.recipe is None or self.recipe.mosaic <= 0:
            return False
        return self.mosaic_until is None or self.epoch < self.mosaic_until

    def __getitem__(self, key: int | tuple[int, ...]) -> tuple[Any, ...]:
        if isinstance(key, tuple) and len(key) == 3:  # an EpochKeySampler key
            self.epoch = int(key[2])
            key = (key[0], key[1])
        return super().__getitem__(key)  # type: ignore[index]

    def load(self, index: int) -> tuple[Any, ...]:
        # read first: an unusable sample raises before any random draw, so its replacement
        # draws exactly what it would have drawn in its own place
        first, recipe = self.read_cached(index), self.recipe
        if recipe is None:
            return self.finish(sanitize(self.plain(first)), index)
        if self.mosaic_on() and torch.rand(()).item() < recipe.mosaic:
            others = torch.randint(0, len(self.samples), (3,)).tolist()
            tiles = [first] + [self._read_good(i) for i in others]
            sample = mosaic4(tiles, self.size, mask_fill=self.mask_fill)
            sample = random_affine(sample, recipe.scales, recipe.translate, self.size, self.mask_fill)
        else:
            sample = self.single(first)
        if self.colour is not None:
            sample = self.colour(sample)
        if self.flip is not None:
            sample = self.flip(sample)
        return self.finish(sanitize(sample), index)

    def _read_good(self, index: int) -> Sample:
        """Sample ``index`` for a mosaic tile, or the next readable one (a tile is never reported)."""
        from visionkit_core.kit.skips import UnusableSample

        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                return self.read_cached(i)
            except UnusableSample as err:
                self._bad[i] = err
        raise self.none_usable(next(iter(self._bad.values())))


def close_mosaic_epoch(max_epochs: int | None, close_mosaic: int) -> int | None:
    """The first epoch without mosaics: ``close_mosaic`` epochs before the end, but never more
    than a quarter of the run (10 epochs: the last 2); None when ``max_epochs`` is unknown."""
    if max_epochs is None or max_epochs < 0:
        return None
    return int(max_epochs) - min(int(close_mosaic), int(max_epochs) // 4)


def scaled_size(size: int, factor: float, stride: int = 32) -> int:
    """``size * factor`` rounded to a multiple of ``stride`` (at least ``stride``): multi-scale sizes."""
    return max(stride, math.floor(size * factor / stride + 0.5) * stride)


def multi_scale_size(size: int, amount: float, step: int, stride: int = 32) -> int:
    """Multi-scale training: the side of optimizer step ``step``'s batch, drawn from
    ``size * [1 - amount, 1 + amount]`` in multiples of ``stride``. A function of ``step`` only
    (its own generator), so a resumed run draws the sizes an uninterrupted one did."""
    if amount <= 0:
        return size
    gen = torch.Generator().manual_seed(1_000_003 + int(step))
    factor = 1.0 + (torch.rand((), generator=gen).item() * 2 - 1) * amount
    return scaled_size(size, factor, stride)


def rescale_batch(
    images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]], size: int
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Square ``images`` (float, ``(C, S, S)``) resized to ``size`` with their targets: ``boxes``
    (xyxy pixels) and ``keypoints`` (``(..., 2)`` pixels) scaled, ``masks`` (per object or
    semantic) resized with nearest-neighbour; other entries as they are."""
    from torch.nn import functional as nnf

    old = int(images[0].shape[-1])
    if size == old:
        return list(images), list(targets)
    scale = size / old
    stacked = nnf.interpolate(
        torch.stack(list(images)), size=(size, size), mode="bilinear", align_corners=False
    )
    out_targets = []
    for target in targets:
        moved = dict(target)
        for key in ("boxes", "keypoints"):
            if key in moved:
                moved[key] = moved[key] * scale
        if "masks" in moved and moved["masks"].ndim >= 2:
            mask = moved["masks"]
            batched = mask[None] if mask.ndim == 3 else mask[None, None]
            resized = nnf.interpolate(batched.float(), size=(size, size), mode="nearest").to(mask.dtype)
            moved["masks"] = resized[0] if mask.ndim == 3 else resized[0, 0]
        out_targets.append(moved)
    return list(stacked.unbind(0)), out_targets


#: ``cache`` choices of the dense datamodules (``--set data.cache=...``).
CACHE_CHOICES = ("auto", "ram", "none")


def cache_budget(cache: str, workers: int) -> int:
    """Bytes of decoded samples each loading process may keep for ``cache``.

    ``ram``: half the memory available now; ``auto``: at most 512 MiB and 10 % of it (small
    data sets end up fully cached, large ones are read from disk as before); ``none``: 0.
    Shared by the loading processes (the training process, or each of ``workers``).
    """
    if cache == "none":
        return 0
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 2**31
    total = available // 2 if cache == "ram" else min(512 * 2**20, available // 10)
    return int(total // max(1, workers))


class RecipeDataModule(SeededDataModule):
    """A datamodule whose training split is a :class:`RecipeDataset`: keys tagged with the epoch
    (:class:`EpochKeySampler`), mosaics closed ``close_mosaic`` epochs before the run's end, decoded
    samples kept in memory as its ``cache`` option says (:func:`cache_budget`).

    ``configure`` (from the subclass's ``__init__``) also checks and keeps ``cache``.
    """

    train_sampler_class = EpochKeySampler
    cache = "auto"

    def configure(self, arguments: Mapping[str, Any], problems: Sequence[str] = ()) -> None:
        cache = arguments.get("cache", "auto")
        bad = [] if cache in CACHE_CHOICES else [f"data.cache must be one of {', '.join(CACHE_CHOICES)}"]
        super().configure(arguments, [*problems, *bad])
        self.cache = cache

    def train_dataloader(self) -> Any:
        """The kit's seeded loader; mosaics stop ``close_mosaic`` epochs before the run's end."""
        dataset = self.dataset("train", "fit")
        dataset.set_close_mosaic(self.trainer.max_epochs if self.trainer else None)
        dataset.cache_bytes = cache_budget(self.cache, self.resolve_num_workers(len(dataset)))
        return super().train_dataloader()
