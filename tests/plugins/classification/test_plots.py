"""EvaluationPlots: curves, confusion matrix, per-class metrics and mistakes of real Lightning fits."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from visionkit_classification.model import ImageClassifier
from visionkit_classification.plots import EvaluationPlots, per_class_scores
from visionkit_loggers.local import csv_logger, tensorboard_logger

from visionkit_core.plugin import manager

CLASSES = ["red", "green", "blue"]
NUM_TRAIN, NUM_VAL, SIZE = 24, 14, 32
PNGS = ("training_curves", "confusion_matrix", "per_class_metrics", "misclassified")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def trainer(run_dir: Path, callbacks: list, max_epochs: int = 2, **kwargs: object) -> L.Trainer:
    options: dict = dict(enable_checkpointing=False, logger=False, log_every_n_steps=1) | kwargs
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        default_root_dir=run_dir,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


def coloured_images(n: int) -> tuple[Tensor, Tensor]:
    """uint8 noise images whose class (red, green, blue) is their brightest channel."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % len(CLASSES)
    images = torch.randint(0, 120, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=gen)
    images[torch.arange(n), labels] += 120
    return images, labels


@dataclass
class Fitted:
    run_dir: Path
    model: ImageClassifier
    callback: EvaluationPlots
    val_images: Tensor
    val_labels: Tensor


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fitted]:
    """ImageClassifier (tiny timm backbone) fitted for 2 epochs on coloured uint8 images."""
    previous = manager._CURRENT
    manager.set_plugins(manager.load_plugins(autoload=False))
    try:
        L.seed_everything(0, verbose=False)
        images, labels = coloured_images(NUM_TRAIN + NUM_VAL)
        labels[NUM_TRAIN::5] = (labels[NUM_TRAIN::5] + 1) % len(CLASSES)  # wrong labels: sure mistakes
        train = DataLoader(TensorDataset(images[:NUM_TRAIN], labels[:NUM_TRAIN]), batch_size=8, shuffle=True)
        val = DataLoader(TensorDataset(images[NUM_TRAIN:], labels[NUM_TRAIN:]), batch_size=5)
        model = ImageClassifier(backbone="timm:test_resnet", num_classes=3, class_names=CLASSES, lr=3e-3)
        run_dir = tmp_path_factory.mktemp("run")
        callback = EvaluationPlots(run_dir, max_misclassified=4)
        logger = [csv_logger(run_dir), tensorboard_logger(run_dir)]
        trainer(run_dir, [callback], logger=logger).fit(model, train, val)
        yield Fitted(run_dir, model, callback, images[NUM_TRAIN:], labels[NUM_TRAIN:])
    finally:
        manager.set_plugins(previous)


def expected_confusion(fitted: Fitted) -> np.ndarray:
    """The (true, predicted) counts of the fitted model's own predictions on the val set."""
    model = fitted.model.eval()
    with torch.no_grad():
        preds = torch.argmax(model(model.normalize(fitted.val_images)), dim=1)
    cm = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for t, p in zip(fitted.val_labels.tolist(), preds.tolist(), strict=True):
        cm[t, p] += 1
    return cm


def test_every_plot_is_a_valid_png(fitted: Fitted) -> None:
    for name in PNGS:
        with Image.open(fitted.run_dir / "plots" / f"{name}.png") as img:
            img.verify()
            assert img.format == "PNG" and img.size[0] > 0 and img.size[1] > 0


def test_history_has_one_row_per_epoch_without_sanity_check(fitted: Fitted) -> None:
    rows = read_csv(fitted.run_dir / "plots" / "history.csv")

    assert [r["epoch"] for r in rows] == ["0", "1"]
    for row in rows:
        assert {k: bool(v) for k, v in row.items()} == dict.fromkeys(row, True)  # every metric present
        assert 0.0 <= float(row["val/acc"]) <= 1.0 and float(row["lr"]) > 0


def test_confusion_matrix_equals_the_models_own_predictions(fitted: Fitted) -> None:
    rows = read_csv(fitted.run_dir / "plots" / "confusion_matrix.csv")
    written = np.array([[int(r[name]) for name in CLASSES] for r in rows])

    assert [r["true \\ predicted"] for r in rows] == CLASSES
    np.testing.assert_array_equal(written, expected_confusion(fitted))
    assert fitted.model.last_eval_output is None  # the stored logits were used (and released)


def test_per_class_metrics_has_one_row_per_class(fitted: Fitted) -> None:
    rows = read_csv(fitted.run_dir / "plots" / "per_class_metrics.csv")
    cm = expected_confusion(fitted)

    assert [r["class"] for r in rows] == CLASSES
    assert all(0.0 <= float(r[k]) <= 1.0 for r in rows for k in ("precision", "recall", "f1"))
    assert sum(int(r["support"]) for r in rows) == NUM_VAL
    assert [float(r["recall"]) for r in rows] == pytest.approx(np.diag(cm) / cm.sum(axis=1), abs=1e-6)


def test_misclassified_keeps_the_most_confident_mistakes_up_to_the_limit(fitted: Fitted) -> None:
    mistakes = fitted.callback.misclassified
    wrong = int(NUM_VAL - np.trace(expected_confusion(fitted)))

    assert len(mistakes) == min(4, wrong) > 0
    assert all(m.label != m.pred for m in mistakes)
    assert [m.confidence for m in mistakes] == sorted((m.confidence for m in mistakes), reverse=True)
    assert mistakes[0].image.shape == (SIZE, SIZE, 3) and 0.0 <= mistakes[0].image.min() <= 1.0


def test_tensorboard_holds_the_plot_images(fitted: Fitted) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(fitted.run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()

    assert {f"plots/{name}" for name in PNGS} <= set(events.Tags()["images"])
    assert events.Images("plots/confusion_matrix")[-1].width > 0


# -- a third-party task: no last_eval_output, no accuracy, no denormalize -----------------
class Oracle(L.LightningModule):
    """Classifies images by their mean brightness (always right); logs only losses."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        centers = torch.tensor([0.0, 0.5, 1.0])
        return -100.0 * self.scale * (x.mean(dim=(1, 2, 3))[:, None] - centers) ** 2

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = torch.nn.functional.cross_entropy(self(batch[0]), batch[1])
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("val/loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def oracle_data() -> DataLoader:
    labels = torch.arange(9) % 3
    images = (labels.float() / 2).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    return DataLoader(TensorDataset(images, labels), batch_size=4)


def test_a_task_without_stored_logits_or_accuracy_still_gets_its_plots(tmp_path: Path) -> None:
    callback = EvaluationPlots(tmp_path)
    trainer(tmp_path, [callback]).fit(Oracle(), oracle_data(), oracle_data())

    history = read_csv(tmp_path / "plots" / "history.csv")
    metrics = read_csv(tmp_path / "plots" / "per_class_metrics.csv")
    assert [(r["train/acc"], r["val/acc"], bool(r["val/loss"])) for r in history] == [("", "", True)] * 2
    assert [(r["class"], r["precision"], r["recall"], r["f1"], r["support"]) for r in metrics] == [
        (str(i), "1", "1", "1", "3") for i in range(3)
    ]
    assert callback.misclassified == []  # misclassified.png says so instead of showing a grid
    assert all((tmp_path / "plots" / f"{name}.png").stat().st_size > 0 for name in PNGS)


class OldOracle(Oracle):
    """A task written for hookspec 1.1: its validation step leaves ``(logits, labels)``."""

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        logits = self(batch[0])
        self.last_eval_output = (logits, batch[1])
        self.log("val/loss", torch.nn.functional.cross_entropy(logits, batch[1]))


def test_a_hookspec_1_1_task_leaving_logits_and_labels_still_gets_its_plots(tmp_path: Path) -> None:
    trainer(tmp_path, [EvaluationPlots(tmp_path)]).fit(OldOracle(), oracle_data(), oracle_data())

    metrics = read_csv(tmp_path / "plots" / "per_class_metrics.csv")
    rows = [(r["class"], r["recall"], r["support"]) for r in metrics]
    assert rows == [(str(i), "1", "3") for i in range(3)]


def test_an_epoch_without_validation_has_empty_val_cells(tmp_path: Path) -> None:
    trainer(tmp_path, [EvaluationPlots(tmp_path)], check_val_every_n_epoch=2).fit(
        Oracle(), oracle_data(), oracle_data()
    )

    history = read_csv(tmp_path / "plots" / "history.csv")
    assert [bool(r["val/loss"]) for r in history] == [False, True]


def test_history_survives_resume_from_a_checkpoint(tmp_path: Path) -> None:
    def ckpt() -> ModelCheckpoint:
        return ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)

    first = trainer(tmp_path, [EvaluationPlots(tmp_path), ckpt()], enable_checkpointing=True)
    first.fit(Oracle(), oracle_data(), oracle_data())
    second = trainer(tmp_path, [EvaluationPlots(tmp_path), ckpt()], max_epochs=3, enable_checkpointing=True)
    second.fit(Oracle(), oracle_data(), oracle_data(), ckpt_path=tmp_path / "checkpoints" / "last.ckpt")

    history = read_csv(tmp_path / "plots" / "history.csv")
    assert [r["epoch"] for r in history] == ["0", "1", "2"]


def test_wandb_offline_run_holds_the_plot_images(tmp_path: Path) -> None:
    # a fresh process: wandb keeps global state
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from test_plots import EvaluationPlots, Oracle, oracle_data, trainer
        from visionkit_loggers.wandb_logger import finish_loggers, wandb_logger
        run_dir = Path({str(tmp_path / "run")!r})
        loggers = [wandb_logger(run_dir, "plots")]
        try:
            fit = trainer(run_dir, [EvaluationPlots(run_dir)], logger=loggers)
            fit.fit(Oracle(), oracle_data(), oracle_data())
        finally:
            finish_loggers(loggers)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", NETRC=str(tmp_path / "no-netrc"))
    env.update({f"WANDB_{d}_DIR": str(tmp_path / d.lower()) for d in ("CONFIG", "CACHE", "DATA", "ARTIFACT")})
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    (run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    pngs = (run / "files" / "media" / "images" / "plots").glob("*.png")
    logged = {re.sub(r"_\d+_[0-9a-f]+\.png$", "", png.name) for png in pngs}  # NAME_STEP_HASH.png
    assert logged == set(PNGS)


def test_per_class_scores_count_zero_over_zero_as_zero() -> None:
    cm = np.array([[2, 1, 0], [0, 0, 0], [1, 0, 0]])  # class 1 absent; classes 1, 2 never predicted right

    scores = per_class_scores(cm)

    np.testing.assert_allclose(scores["precision"], [2 / 3, 0.0, 0.0])
    np.testing.assert_allclose(scores["recall"], [2 / 3, 0.0, 0.0])
    np.testing.assert_allclose(scores["f1"], [2 / 3, 0.0, 0.0])
    np.testing.assert_array_equal(scores["support"], [3, 0, 1])


def test_class_names_with_dollar_signs_are_drawn_literally(tmp_path: Path) -> None:
    callback = EvaluationPlots(tmp_path)
    callback.confusion_matrix = torch.tensor([[3, 1], [0, 2]])
    names = ["US$ 5", "$x_{1$"]  # unbalanced mathtext: matplotlib would fail to parse it

    paths = callback.write(None, names)

    assert sorted(paths) == ["confusion_matrix", "misclassified", "per_class_metrics"]
    assert all(path.stat().st_size > 0 for path in paths.values())
    assert [r["class"] for r in read_csv(tmp_path / "plots" / "per_class_metrics.csv")] == names
