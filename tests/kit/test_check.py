"""The kit's data-check report shape, parallel inspection and export sidecar input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from visionkit_core import BadSample
from visionkit_core.kit.check import PARALLEL_MIN, DataReport, inspect_all
from visionkit_core.kit.export import image_input


@dataclass
class Counted(DataReport):
    images: dict[str, int] = field(default_factory=dict)

    def usable(self) -> bool:
        return self.images.get("train", 0) > 0

    def counts(self) -> dict[str, Any]:
        return {"images": dict(self.images)}

    def split_lines(self) -> list[str]:
        return [f"  {split}: {n} images" for split, n in self.images.items()]


def test_a_report_is_ok_only_without_bad_samples_and_with_usable_ones() -> None:
    report = Counted("/d", "flat", ["a", "b"], images={"train": 3})
    assert report.ok and report.format() == "/d: flat layout, 2 classes\n  train: 3 images\nno problems found"
    assert list(report.as_dict()) == ["root", "layout", "ok", "class_names", "images", "bad"]
    report.bad.append(BadSample("/d/x.png", "cannot read image: truncated"))
    assert not report.ok and report.format().splitlines()[-2:] == [
        "1 bad samples:",
        "  /d/x.png: cannot read image: truncated",
    ]
    assert report.as_dict()["bad"] == [
        {"path": "/d/x.png", "reason": "cannot read image: truncated", "line": None}
    ]
    assert Counted("/d", "flat", []).format().endswith("no usable samples found")


def test_inspect_all_gives_results_in_order_in_and_out_of_process() -> None:
    few = list(range(5))
    many = list(range(PARALLEL_MIN + 3))
    assert inspect_all(abs, [-i for i in few]) == few
    assert inspect_all(abs, [-i for i in many], workers=2) == many


def test_the_sidecar_input_is_one_shape_for_every_task() -> None:
    got = image_input({"mean": (0.5, 0.5, 0.5), "std": [1, 1, 1]}, resize=[32, 32])
    assert got == {
        "name": "images",
        "layout": "NCHW",
        "dtype": "float32",
        "channels": "RGB",
        "value_range": [0.0, 1.0],
        "resize": [32, 32],
        "normalization": "inside the model",
        "mean": [0.5, 0.5, 0.5],
        "std": [1.0, 1.0, 1.0],
    }


def test_a_seeded_split_holds_out_the_same_share_for_the_same_seed() -> None:
    from visionkit_core import UsageError
    from visionkit_core.kit.splits import seeded_split

    train, val = seeded_split(list(range(10)), 0.3, seed=1)
    assert len(val) == 3 and sorted(train + val) == list(range(10)) and train == sorted(train)
    assert seeded_split(list(range(10)), 0.3, seed=1) == (train, val) != seeded_split(list(range(10)), 0.3, 2)
    with pytest.raises(UsageError, match=r"2 training images cannot be split by --val-split 0\.9"):
        seeded_split([1, 2], 0.9, seed=0, noun="images")
