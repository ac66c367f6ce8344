"""``visionkit data check DIR`` for COCO and YOLO detection data: counts, and every bad annotation and image.

Pillow and the standard library only (no torch). Every annotation problem is named with its
file and annotation id (COCO) or line (YOLO); every image is decoded completely, as training
would, and its size compared with what the COCO file declares (the boxes were drawn on that
size). Larger datasets are decoded in worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core import BadSample, UsageError
from visionkit_core.kit.check import DataReport, inspect_all
from visionkit_detection.coco import scan_coco
from visionkit_detection.layouts import DetLayout, Problem, Sample, detect, find_yaml
from visionkit_detection.yolo import scan_yolo

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, MemoryError)


@dataclass
class DetCheckReport(DataReport):
    """The result of checking a detection dataset; ``ok`` is False when anything would be skipped."""

    images: dict[str, int] = field(default_factory=dict)  # usable images per split
    negatives: dict[str, int] = field(default_factory=dict)  # usable images without objects
    objects: dict[str, list[int]] = field(default_factory=dict)  # per split, per class
    bad_heading = "problems"
    nothing_usable = "no usable training images found"

    def usable(self) -> bool:
        return self.images.get("train", 0) > 0

    def counts(self) -> dict[str, Any]:
        return {
            "images": dict(self.images),
            "negatives": dict(self.negatives),
            "objects": {k: list(v) for k, v in self.objects.items()},
        }

    def split_lines(self) -> list[str]:
        lines = []
        for split, count in self.images.items():
            per_class = self.objects.get(split, [])
            shown = ", ".join(f"{n} {c}" for n, c in zip(self.class_names, per_class, strict=False))
            negatives = self.negatives.get(split, 0)
            lines.append(f"  {split}: {count} images ({negatives} without objects); objects: {shown}")
        return lines


def inspect_image(image: str, declared: tuple[int, int] | None) -> str | None:
    """Why ``image`` cannot be used (unreadable, or not the size its annotations declare), else None."""
    from PIL import Image, UnidentifiedImageError

    try:
        if os.path.getsize(image) == 0:
            return "cannot read image: empty file (0 bytes)"
        with Image.open(image) as im:
            im.load()
            width, height = im.size
    except UnidentifiedImageError:
        return "cannot read image: not an image (Pillow cannot identify the file format)"
    except Image.DecompressionBombError as err:
        return f"cannot read image: decompression bomb ({str(err).partition(', could be')[0]})"
    except _DECODE_ERRORS as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"cannot read image: {first}"
    if declared is not None and declared != (height, width):
        return (
            f"image is {width}x{height} but its annotations declare {declared[1]}x{declared[0]} "
            "(the boxes would be wrong)"
        )
    return None


def _inspect(args: tuple[str, tuple[int, int] | None]) -> str | None:
    return inspect_image(*args)


def inspect_many(samples: list[Sample], workers: int | None = None) -> list[str | None]:
    """Why each sample's image cannot be used (None: fine), decoded in worker processes when many."""
    return inspect_all(_inspect, [(s.image, s.size) for s in samples], workers)


def read_layout(root: Path) -> DetLayout:
    """Either layout, with a COCO file that is not COCO reported as a problem instead of raised."""
    kind = detect(root)
    if kind == "coco":
        return scan_coco(root, strict_json=False)
    yaml_file = find_yaml(root)
    if yaml_file is None:
        raise UsageError(f"{str(root)!r} is not a COCO or YOLO detection dataset")
    return scan_yolo(yaml_file)


def check_tree(
    root: Path, workers: int | None = None, progress: Callable[[int], Any] | None = None
) -> DetCheckReport:
    """Check every annotation and image of ``root`` (COCO or YOLO) and report counts and problems.

    Registered as the ``coco`` and ``yolo`` datasets' check (``visionkit data check``).
    """
    layout = read_layout(Path(root))
    report = DetCheckReport(str(root), layout.kind, list(layout.class_names))
    report.bad = [p.as_bad_sample() for p in layout.problems]
    spoiled = layout.bad_images()
    readable = [s for split in layout.splits.values() for s in split if Path(s.image).is_file()]
    reasons = dict(zip((s.image for s in readable), inspect_many(readable, workers), strict=True))
    for split, samples in layout.splits.items():
        counts = [0] * len(layout.class_names)
        good = negatives = 0
        for sample in samples:
            reason = reasons.get(sample.image)
            if reason is not None:
                report.bad.append(BadSample(sample.image, reason))
                continue
            if sample.image in spoiled or sample.image not in reasons:
                continue
            good += 1
            negatives += not sample.boxes
            for label in sample.labels:
                counts[label] += 1
        report.images[split] = good
        report.negatives[split] = negatives
        report.objects[split] = counts
        if progress is not None:
            progress(len(samples))
    return report


def problems_of(layout: DetLayout, samples: list[Sample]) -> list[Problem]:
    """Annotation problems of ``layout`` plus every image of ``samples`` that cannot be decoded."""
    found = list(layout.problems)
    for sample, reason in zip(samples, inspect_many(samples), strict=True):
        if reason is not None:
            found.append(Problem(sample.image, reason, image=sample.image))
    return found
