"""The kit's evaluation callback and plots: history every epoch, figures at the end of fit."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from visionkit_core import MediaSample, TaskSpec
from visionkit_core.kit.evaluation import EvaluationCallback
from visionkit_core.kit.media import media_sample_of
from visionkit_core.kit.plots import cell, colourise, media_grid, per_class_bars

from .tiny_task import Tiny, loader, trainer


class Counting(EvaluationCallback):
    """Counts the validation batches it is given and draws their number as one bar."""

    columns = {"train/loss": ("train/loss_epoch", "train/loss"), "val/loss": ("val/loss",)}
    panels = (("loss", ("train/loss", "val/loss")),)

    def reset(self) -> None:
        self.batches = 0

    def collect(self, trainer: L.Trainer, pl_module: Any, batch: Any, stored: Any) -> None:
        assert stored == "logits"  # what the task's validation step left
        self.batches += 1

    def figures(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Any]:
        return {"batches": per_class_bars({"all": self.batches / 10, "none": None}, "batches / 10")}


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_history_every_epoch_and_figures_at_the_end(tmp_path: Path) -> None:
    callback = Counting(tmp_path)
    trainer(tmp_path, 2, callbacks=[callback]).fit(Tiny(), loader(), loader())
    history = _rows(tmp_path / "plots" / "history.csv")
    assert [r["epoch"] for r in history] == ["0", "1"] and all(float(r["val/loss"]) > 0 for r in history)
    assert callback.batches == 4  # the last validation's batches, not the sanity check's
    for name in ("training_curves", "batches"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_an_epoch_without_validation_leaves_its_val_cells_empty(tmp_path: Path) -> None:
    trainer(tmp_path, 2, callbacks=[Counting(tmp_path)], check_val_every_n_epoch=2).fit(
        Tiny(), loader(), loader()
    )
    assert [bool(r["val/loss"]) for r in _rows(tmp_path / "plots" / "history.csv")] == [False, True]


def test_the_history_survives_resume(tmp_path: Path) -> None:
    first = trainer(tmp_path, 1, callbacks=[Counting(tmp_path)])
    first.fit(Tiny(), loader(), loader())
    first.save_checkpoint(tmp_path / "one.ckpt")
    trainer(tmp_path, 2, callbacks=[Counting(tmp_path)]).fit(
        Tiny(), loader(), loader(), ckpt_path=tmp_path / "one.ckpt"
    )
    assert [r["epoch"] for r in _rows(tmp_path / "plots" / "history.csv")] == ["0", "1"]


def test_media_grid_shows_masks_in_rows_and_boxes_on_the_image() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    seg = MediaSample(image, "acc", true_mask=np.eye(8, dtype=np.uint8), pred_mask=np.zeros((8, 8)))
    det = MediaSample(image, "boxes", true_boxes=[[1, 1, 4, 4]], true_labels=[0], pred_boxes=[[0, 0, 3, 3]],
                      pred_labels=[1], pred_scores=[0.9])  # fmt: skip
    fig = media_grid([seg, det], ["a", "b"])
    assert len([ax for ax in fig.axes if ax.images]) == 4  # image | truth | prediction, then one image
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["a", "b 0.90"] and len(fig.axes[3].patches) == 2
    captions_only = media_grid([MediaSample(image, f"{i}", correct=i % 2 == 0) for i in range(5)])
    assert len([ax for ax in captions_only.axes if ax.images]) == 5 and len(captions_only.axes) == 6


def test_media_sample_of_any_kind_of_sample() -> None:
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    label = media_sample_of(image, {"label": torch.tensor(1)}, {"label": torch.tensor(0)}, ["a", "b"])
    assert (label.caption, label.correct, label.image.shape) == ("pred: a / true: b", False, (8, 8, 3))
    names = ["a", "b", "c"]
    pred_set = {"multi_hot": torch.tensor([1.0, 0, 1]), "probs": torch.rand(3)}
    hot = media_sample_of(image.float(), {"multi_hot": torch.tensor([1.0, 0, 1])}, pred_set, names)
    assert (hot.caption, hot.correct) == ("pred: a c / true: a c", True)
    assert media_sample_of(image, None, {"probs": torch.tensor([0.2, 0.7])}, ["a", "b"]).caption == "pred: b"
    mask = torch.tensor([[0, 1], [255, 1]])
    seg = media_sample_of(image, {"mask": mask}, {"mask": torch.zeros(2, 2, dtype=torch.long)}, None)
    assert seg.caption == "pixel acc 0.33" and seg.true_mask.tolist() == [[0, 1], [255, 1]]
    boxes = {"boxes": torch.tensor([[0.0, 0, 4, 4]]), "labels": torch.tensor([1])}
    truth = {**boxes, "keypoints": torch.tensor([[[1.0, 2], [3, 4]]]), "visibility": torch.tensor([[1, 0]])}
    pred = {**boxes, "labels": torch.tensor([0]), "scores": torch.tensor([0.5])}
    pred["keypoints"] = torch.tensor([[[2.0, 2, 1], [6, 6, 1]]])
    objects = media_sample_of(image, truth, pred, ["x", "y"], caption="given")
    assert objects.caption == "given" and objects.true_labels == [1] and objects.pred_scores == [0.5]
    assert objects.true_keypoints == [[[1.0, 2.0, 1.0], [3.0, 4.0, 0.0]]]
    assert objects.pred_keypoints == [[[2.0, 2.0, 1.0], [6.0, 6.0, 1.0]]]
    assert media_sample_of(image, truth, pred, None).caption == "1 true, 1 predicted"
    fig = media_grid([objects])
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [1, 2]  # visible keypoints only
    # the deprecated (images, labels) form: bare tensors; a class index and the predicted probabilities
    bare = media_sample_of(image, torch.tensor(2), torch.tensor([0.1, 0.2, 0.7]), names)
    assert (bare.caption, bare.correct) == ("pred: c / true: c", True)
    bare_set = media_sample_of(image, torch.tensor([1.0, 0, 0]), torch.tensor([0.9, 0.2, 0.7]), names)
    assert (bare_set.caption, bare_set.correct) == ("pred: a c / true: a", False)
    probs_only = media_sample_of(
        image, {"label": torch.tensor(1)}, {"probs": torch.tensor([0.1, 0.2, 0.7])}, names
    )
    assert probs_only.caption == "pred: c / true: b"


def test_plot_helpers_on_plain_values() -> None:
    fig = per_class_bars({"cat": 0.5, "dog": float("nan"), "$x": None}, "IoU")
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.50", "n/a", "n/a"]
    assert colourise(np.array([[0, 1, 255]])).tolist() == [[[0, 0, 0], [128, 0, 0], [255, 255, 255]]]
    assert (cell(None), cell(float("nan")), cell(2.0, integer=True), cell(1 / 3)) == ("", "", "2", "0.333333")


class Specified(Tiny):
    """A kit task that declares only a TaskSpec and media samples: its evaluation is the kit's default."""

    visionkit_task = TaskSpec(name="tiny", monitor="val/loss", mode="min", metrics=("val/loss", "val/acc"))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        logits = self.net(images)
        self.log("val/loss", torch.nn.functional.cross_entropy(logits, labels))
        self.log("val/acc", (logits.argmax(1) == labels).float().mean())

    def media_samples(self, batch: Any, limit: int) -> list[MediaSample]:
        images, labels = batch
        shown = (self.denormalize(images[:limit]).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1)
        picked = self.net(images[:limit]).argmax(1)
        return [
            MediaSample(image=im.cpu().numpy(), caption=f"{self.class_names[int(p)]}", correct=bool(p == t))
            for im, p, t in zip(shown, picked, labels[:limit], strict=True)
        ]


def test_every_kit_task_gets_history_curves_and_a_sample_grid_by_default(tmp_path: Path) -> None:
    task = Specified()
    (callback,) = task.evaluation_callbacks(tmp_path)
    trainer(tmp_path, 2, callbacks=[callback]).fit(task, loader(), loader())
    history = _rows(tmp_path / "plots" / "history.csv")
    assert list(history[0]) == ["epoch", "train/loss", "val/loss", "val/acc"] and len(history) == 2
    assert all(0.0 <= float(r["val/acc"]) <= 1.0 and float(r["train/loss"]) > 0 for r in history)
    assert len(callback.samples) == 8  # the default number, from the last validation's first batches
    for name in ("training_curves", "samples"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
