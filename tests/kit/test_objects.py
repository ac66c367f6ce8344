"""The kit's object parts: original-size outputs, predict JSON, unique stems, drawing, media samples,
and the ObjectTask base's option checks. No training here (cheap)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from visionkit_core import ConfigError, UsageError
from visionkit_core.kit.objects import (
    ObjectTask,
    draw_objects,
    media_sample,
    objects_json,
    summary_lines,
    to_original,
    unique_stems,
    write_instances,
    write_json,
)


def _pred() -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 30.0, 40.0, 60.0], [50.0, 60.0, 60.0, 70.0]]),
        "scores": torch.tensor([0.4, 0.9, 0.7]),
        "labels": torch.tensor([0, 1, 5]),
        "masks": torch.ones(3, 1, 80, 80),
        "keypoints": torch.tensor([[[5.0, 5.0, 1.0]], [[30.0, 70.0, 1.0]], [[55.0, 65.0, 1.0]]]),
    }


def test_to_original_scales_clips_and_drops_objects_in_the_padding() -> None:
    # a 40 x 20 (h x w) image letterboxed into 80 px: scale 2, padding right of x = 40
    out = to_original(_pred(), (40, 20), 80)
    assert out["boxes"].tolist() == [
        [0.0, 0.0, 5.0, 5.0],
        [10.0, 15.0, 20.0, 30.0],
    ]  # the third lay in the padding
    assert out["masks"].shape == (2, 40, 20) and out["masks"].dtype == torch.uint8
    assert out["keypoints"][1, 0, :2].tolist() == [15.0, 35.0] and out["scores"].tolist() == pytest.approx(
        [0.4, 0.9]
    )


def test_objects_json_lists_best_first_over_the_threshold_with_extras() -> None:
    found = objects_json(_pred(), ["cat", "dog"], 0.5, lambda i: {"n": i})
    assert found == [
        {"label": "dog", "score": 0.9, "box": [20.0, 30.0, 40.0, 60.0], "n": 1},
        {"label": "5", "score": 0.7, "box": [50.0, 60.0, 60.0, 70.0], "n": 2},  # unknown class: its index
    ]
    assert summary_lines([{"path": "a.png", "instances": found}]) == ["a.png: 2 instances dog 0.90, 5 0.70"]


def test_unique_stems_number_inputs_that_share_a_stem(tmp_path: Path) -> None:
    assert list(unique_stems(["a/x.png", "b/x.jpg", "y.png", "c/x.png"])) == ["x", "x-2", "y", "x-3"]
    write_json(tmp_path / "out" / "p.json", [{"a": 1}])
    assert (tmp_path / "out" / "p.json").read_text() == '[\n {\n  "a": 1\n }\n]\n'


def test_write_instances_writes_json_a_folder_or_summary_lines(tmp_path: Path) -> None:
    from visionkit_core import Prediction

    preds = [Prediction("a.jpg", _pred()), Prediction("b.jpg", None)]  # b: unreadable, no value
    calls: list[tuple[Path, str, int]] = []

    def images(kept: list[Prediction], entries: list[dict], folder: Path, suffix: str) -> int:
        calls.append((folder, suffix, len(entries)))
        return len(kept)

    def extra(pred: dict) -> object:
        return lambda i: {"k": i}

    args = (["cat", "dog"], extra, images, "drawn things")
    lines = write_instances(preds, None, 0.5, {}, *args)
    assert lines == ["a.jpg: 2 instances dog 0.90, 5 0.70"]
    with pytest.raises(UsageError, match="--overlay needs --output"):
        write_instances(preds, None, 0.5, {"overlay": True}, *args)
    out = tmp_path / "p.json"
    lines = write_instances(preds, out, 0.5, {"overlay": True}, *args)
    assert json.loads(out.read_text())[0]["instances"][0] == {
        "label": "dog",
        "score": 0.9,
        "box": [20, 30, 40, 60],
        "k": 1,
    }
    assert lines == [
        f"1 images, 2 instances (score >= 0.5) -> {out}",
        f"1 drawn things -> {tmp_path / 'p_drawn'}",
    ]
    folder = tmp_path / "out"
    lines = write_instances(preds, folder, 0.5, {}, *args)
    assert (folder / "predictions.json").is_file() and calls[-1] == (folder, "_drawn", 1)
    assert lines == [
        f"1 images, 2 instances (score >= 0.5) -> {folder}/predictions.json, 1 drawn things in {folder}"
    ]


def test_drawing_fills_masks_and_boxes_and_leaves_an_empty_image_alone() -> None:
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    assert draw_objects(image, [], [], []) is image
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, 4:8, 4:8] = True
    drawn = draw_objects(image, [[10.0, 10.0, 20.0, 20.0]], ["cat 0.90"], [0], masks)
    assert drawn[:, 5, 5].sum() > 0 and drawn[:, 10, 15].sum() > 0 and drawn[:, 30, 30].sum() == 0


def test_a_media_sample_holds_the_truth_and_the_kept_predictions() -> None:
    pred, target = _pred(), {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([1])}
    sample = media_sample(torch.zeros(3, 8, 8, dtype=torch.uint8), target, pred, pred["scores"] > 0.5, True)
    assert sample.image.shape == (8, 8, 3) and sample.caption == "1 true, 2 predicted"
    assert sample.pred_labels == [1, 5] and sample.true_boxes == [[1.0, 1.0, 5.0, 5.0]] and sample.correct


class Boxes(ObjectTask):
    from visionkit_core import TaskSpec

    visionkit_task = TaskSpec(name="boxes", monitor="val/map", mode="max", metrics=("val/map",))

    def __init__(
        self,
        num_classes: int = 1,
        fpn_channels: int = 32,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.check_options({"fpn_channels": 16})


def test_object_tasks_check_their_classes_options_and_thresholds() -> None:
    Boxes()
    with pytest.raises(UsageError, match="boxes needs at least one object class"):
        Boxes(num_classes=0)
    with pytest.raises(ConfigError, match=r"task\.fpn_channels=8: must be at least 16"):
        Boxes(fpn_channels=8)
    with pytest.raises(ConfigError, match="score_thresh must be in"):
        Boxes(score_thresh=1.0)
    with pytest.raises(UsageError, match=r"--threshold 2\.0"):
        Boxes().write_predictions([], None, {"threshold": 2.0})
