"""Find the image/mask pairs of a segmentation folder: the masks layout and Pascal VOC.

Standard library only (no torch, no decoding), so ``visionkit_claim_data`` and ``data check``
can call it cheaply. Masks layout::

    DIR/{train,val[,test]}/images/<stem>.<ext>   DIR/<split>/masks/<stem>.png   [DIR/classes.txt]

Pascal VOC: ``DIR/JPEGImages/<stem>.jpg``, ``DIR/SegmentationClass/<stem>.png`` (palette
PNGs; the index values are the classes, 255 the ignored border) and the split lists
``DIR/ImageSets/Segmentation/{train,val[,test]}.txt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from visionkit_core import BadSample, UsageError
from visionkit_core.kit.splits import seeded_split

IGNORE_INDEX = 255
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_NAMES = ("train", "val", "test")
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]  # fmt: skip


@dataclass(frozen=True)
class Pair:
    """One sample: an image file and its mask file."""

    image: str
    mask: str


@dataclass
class SegLayout:
    """The samples of each split, the class names the folder declares, and unusable samples."""

    root: Path
    kind: str  # "masks" or "voc"
    splits: dict[str, list[Pair]]
    class_names: list[str] | None  # None: derive from the largest mask value
    bad: list[BadSample] = field(default_factory=list)


def detect(path: Path) -> str | None:
    """``"masks"`` or ``"voc"`` for a folder in that layout, else ``None`` (stat calls only)."""
    try:
        if not path.is_dir():
            return None
        if (path / "train" / "images").is_dir() and (path / "train" / "masks").is_dir():
            return "masks"
        if all((path / d).is_dir() for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")):
            return "voc"
    except OSError:
        return None
    return None


def read_class_names(root: Path) -> list[str] | None:
    """Names from ``root/classes.txt`` (one per line, index order; blank lines ignored), if present."""
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise UsageError(f"{str(path)!r} is empty; write one class name per line, background first")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(f"{str(path)!r} names a class twice: {', '.join(dupes)}")
    if len(names) > IGNORE_INDEX:
        raise UsageError(f"{str(path)!r} lists {len(names)} classes; at most {IGNORE_INDEX} (255 = ignore)")
    return names


def scan(root: Path) -> SegLayout:
    """List the pairs of ``root`` (either layout); images without a mask become bad samples."""
    kind = detect(root)
    if kind is None:
        raise UsageError(
            f"{str(root)!r} is not a segmentation folder: expected train/images/ + train/masks/ "
            "(and val/..., optional classes.txt), or Pascal VOC's JPEGImages/, SegmentationClass/ "
            "and ImageSets/Segmentation/"
        )
    return _scan_masks(root) if kind == "masks" else _scan_voc(root)


def _images_in(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        found = [
            Path(e.path)
            for e in entries
            if not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS and e.is_file()
        ]
    return sorted(found, key=lambda p: p.name)


def _scan_masks(root: Path) -> SegLayout:
    splits: dict[str, list[Pair]] = {}
    bad: list[BadSample] = []
    for split in SPLIT_NAMES:
        images_dir, masks_dir = root / split / "images", root / split / "masks"
        if not images_dir.is_dir():
            continue
        pairs = []
        for image in _images_in(images_dir):
            mask = masks_dir / f"{image.stem}.png"
            if mask.is_file():
                pairs.append(Pair(str(image), str(mask)))
            else:
                bad.append(BadSample(str(image), f"no mask: expected {mask}"))
        splits[split] = pairs
    return SegLayout(root, "masks", splits, read_class_names(root), bad)


def _scan_voc(root: Path) -> SegLayout:
    sets = root / "ImageSets" / "Segmentation"
    splits: dict[str, list[Pair]] = {}
    bad: list[BadSample] = []
    for split in SPLIT_NAMES:
        listing = sets / f"{split}.txt"
        if not listing.is_file():
            continue
        pairs = []
        for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
            stem = line.strip().split()[0] if line.strip() else ""
            if not stem:
                continue
            image = root / "JPEGImages" / f"{stem}.jpg"
            mask = root / "SegmentationClass" / f"{stem}.png"
            if not image.is_file():
                bad.append(BadSample(str(listing), f"{stem}: no image {image}", line=number))
            elif not mask.is_file():
                bad.append(BadSample(str(image), f"no mask: expected {mask}"))
            else:
                pairs.append(Pair(str(image), str(mask)))
        splits[split] = pairs
    return SegLayout(root, "voc", splits, read_class_names(root) or list(VOC_CLASSES), bad)


def train_val(layout: SegLayout, val_split: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """The train and val pairs: the folder's own val split, else a seeded ``val_split`` share of train."""
    train = list(layout.splits.get("train", []))
    if not train:
        raise UsageError(f"{str(layout.root)!r} has no training samples (train images with masks)")
    if layout.splits.get("val"):
        return train, list(layout.splits["val"])
    return seeded_split(train, val_split, seed, "samples")
