"""Read detection annotations as they are: the COCO and YOLO (Ultralytics) layouts.

Standard library and PyYAML only (no torch, no image decoding; the parsers are in
:mod:`visionkit_detection.coco` and :mod:`visionkit_detection.yolo`), so ``visionkit_claim_data``
and ``data check`` can call it cheaply. COCO::

    DIR/annotations/instances_{train,val[,test]}.json    images in DIR/{train,val,test}/
    (instances_train2017.json -> DIR/train2017/; ``file_name`` is relative to that folder)

YOLO::

    DIR/data.yaml   path, train, val[, test], names (a dict {0: name} or a list)
    images in <path>/images/<split>/, labels in <path>/labels/<split>/<stem>.txt
    one object per line: ``cls cx cy w h`` normalised to [0, 1] (or ``cls x1 y1 x2 y2 ...``, a polygon)

Every box becomes ``[x0, y0, x1, y1]``: pixels for COCO, normalised for YOLO (scaled once the
image is decoded). A problem in an annotation (a box outside the image, a zero-area box, an
unknown category id, an annotation naming a missing image, a malformed line) is a
:class:`Problem` naming its file and annotation id or line; the image it belongs to is left
out of training (an object without its box would teach the model that it is background).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core import BadSample, UsageError
from visionkit_core.kit.splits import seeded_split

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_NAMES = ("train", "val", "test")
YAML_NAMES = ("data.yaml", "dataset.yaml")
#: Boxes may overshoot the image by this much (rounding in exporters) and are then clipped.
PIXEL_TOLERANCE = 1.0
NORMALISED_TOLERANCE = 1e-3


@dataclass
class Sample:
    """One image and its objects. ``boxes`` are xyxy, in pixels or (``normalised``) in [0, 1]."""

    image: str
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # class indices into the class names
    crowd: list[bool] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (height, width) the annotations declare (COCO)
    normalised: bool = False
    source: str = ""  # the annotation file
    refs: list[int] = field(default_factory=list)  # annotation id (COCO) or line number (YOLO) per box


@dataclass(frozen=True)
class Problem:
    """What is wrong with one annotation (or a whole file): where, why, and which image it spoils."""

    file: str
    reason: str
    ref: int | None = None  # annotation id (COCO) or line number (YOLO)
    image: str | None = None  # the image left out because of it (None: nothing to leave out)

    def as_bad_sample(self) -> BadSample:
        """For ``data check``: the annotation file and id/line."""
        return BadSample(self.file, self.reason, self.ref)

    def skipped(self) -> BadSample:
        """For training: the image left out (or the annotation file), with where the problem is."""
        where = f"{self.file}:{self.ref}" if self.ref is not None else self.file
        return BadSample(
            self.image or self.file, f"{self.reason} ({where})", None if self.image else self.ref
        )


@dataclass
class DetLayout:
    """The usable samples of each split, the class names, and every problem found while reading."""

    root: Path
    kind: str  # "coco" or "yolo"
    class_names: list[str]
    splits: dict[str, list[Sample]]
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # split -> annotation file or image folder

    def bad_images(self) -> set[str]:
        return {p.image for p in self.problems if p.image}


def find_yaml(path: Path) -> Path | None:
    """The YOLO ``data.yaml`` that ``path`` is or holds, else None (stat calls only)."""
    try:
        if path.is_file():
            return path if path.suffix.lower() in (".yaml", ".yml") else None
        if path.is_dir():
            return next((path / n for n in YAML_NAMES if (path / n).is_file()), None)
    except OSError:
        return None
    return None


def coco_files(root: Path) -> dict[str, Path]:
    """``{split: DIR/annotations/instances_<split>*.json}`` (``train2017`` counts as ``train``)."""
    folder = root / "annotations"
    found: dict[str, Path] = {}
    try:
        names = sorted(os.listdir(folder)) if folder.is_dir() else []
    except OSError:
        return {}
    for name in names:
        if not (name.startswith("instances_") and name.endswith(".json")):
            continue
        stem = name[len("instances_") : -len(".json")]
        split = next((s for s in SPLIT_NAMES if stem.startswith(s)), None)
        if split is not None and split not in found:
            found[split] = folder / name
    return found


def detect(path: Path) -> str | None:
    """``"coco"`` or ``"yolo"`` for a folder (or YOLO yaml file) in that layout, else None."""
    if path.is_dir() and "train" in coco_files(path):
        return "coco"
    if find_yaml(path) is not None:
        return "yolo"
    return None


def scan(path: Path) -> DetLayout:
    """Read every split of ``path`` (either layout); unusable annotations become problems."""
    from visionkit_detection.coco import scan_coco
    from visionkit_detection.yolo import scan_yolo

    kind = detect(path)
    if kind == "coco":
        return scan_coco(path)
    if kind == "yolo":
        yaml_file = find_yaml(path)
        assert yaml_file is not None
        return scan_yolo(yaml_file)
    raise UsageError(
        f"{str(path)!r} is not a detection dataset: expected COCO's annotations/instances_train.json "
        "(+ instances_val.json) with images in train/ and val/, or a YOLO data.yaml "
        "(path, train, val, names) with images/<split>/ and labels/<split>/"
    )


def outside(box: list[float], width: float, height: float, tolerance: float) -> str | None:
    """How ``box`` (xyxy) leaves a ``width`` x ``height`` image beyond ``tolerance``, else None."""
    x0, y0, x1, y1 = box
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return "lies entirely outside"
    if x0 < -tolerance or y0 < -tolerance or x1 > width + tolerance or y1 > height + tolerance:
        return "extends outside"
    return None


def fmt(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


# -- splits ----------------------------------------------------------------------------------


def usable(layout: DetLayout, split: str) -> list[Sample]:
    """The samples of ``split`` whose annotations are all usable."""
    bad = layout.bad_images()
    return [s for s in layout.splits.get(split, []) if s.image not in bad]


def train_val(layout: DetLayout, val_split: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """The usable train and val samples: the dataset's own val split, else a seeded share of train."""
    train = usable(layout, "train")
    if not train:
        raise UsageError(f"{str(layout.root)!r} has no usable training images")
    if layout.splits.get("val"):
        return train, usable(layout, "val")
    return seeded_split(train, val_split, seed, "images")
