"""``visionkit data check DIR`` for segmentation folders: counts per split and class, every bad sample.

Pillow and numpy only. Every image and mask is decoded completely, as training would, and
checked against each other: a missing mask, an image/mask size mismatch, mask values that
are not classes (other than 255 = ignore), and unreadable files are each named with their
reason. Larger trees are checked in worker processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core import BadSample
from visionkit_core.kit.check import DataReport, inspect_all
from visionkit_segmentation.layouts import IGNORE_INDEX, Pair, scan
from visionkit_segmentation.masks import PairCheck, inspect_pair


@dataclass
class SegCheckReport(DataReport):
    """The result of checking a segmentation folder; ``ok`` is False when any sample is bad."""

    samples: dict[str, int] = field(default_factory=dict)  # good pairs per split
    images_with_class: dict[str, list[int]] = field(default_factory=dict)  # per split, per class

    def usable(self) -> bool:
        return sum(self.samples.values()) > 0

    def header(self) -> str:
        return f"{super().header()} (255 = ignore)"

    def counts(self) -> dict[str, Any]:
        return {
            "ignore_index": IGNORE_INDEX,
            "samples": dict(self.samples),
            "images_with_class": {k: list(v) for k, v in self.images_with_class.items()},
        }

    def split_lines(self) -> list[str]:
        lines = []
        for split, count in self.samples.items():
            per_class = self.images_with_class.get(split, [])
            shown = ", ".join(f"{n} {c}" for n, c in zip(self.class_names, per_class, strict=False))
            lines.append(f"  {split}: {count} samples; images containing each class: {shown}")
        return lines


def _inspect(job: tuple[Pair, int | None]) -> PairCheck:
    return inspect_pair(*job)


def check_tree(
    root: Path, workers: int | None = None, progress: Callable[[int], Any] | None = None
) -> SegCheckReport:
    """Check every pair of ``root`` (masks or VOC layout) and report counts and bad samples.

    Registered as the ``segmasks`` dataset's check (``visionkit data check``); imports no torch.
    ``progress(n)`` is called with the number of pairs just checked (per split), when given.
    """
    layout = scan(Path(root))
    declared = layout.class_names
    num_classes = len(declared) if declared else None
    pairs = [(split, p) for split, ps in layout.splits.items() for p in ps]
    results = inspect_all(_inspect, [(p, num_classes) for _, p in pairs], workers)
    if declared is None:  # no classes.txt: every value present is a class, named class_<i>
        top = max((max(r.classes) for r in results if r.classes), default=0)
        declared = [f"class_{i}" for i in range(top + 1)]
    report = SegCheckReport(str(root), layout.kind, list(declared), bad=list(layout.bad))
    for split in layout.splits:
        counts = [0] * len(declared)
        good = 0
        for (s, _), result in zip(pairs, results, strict=True):
            if s != split:
                continue
            if result.reason is not None:
                report.bad.append(BadSample(str(result.path), result.reason))
                continue
            good += 1
            for c in result.classes:
                counts[c] += 1
        report.samples[split] = good
        report.images_with_class[split] = counts
        if progress is not None:
            progress(len(layout.splits[split]))
    return report
