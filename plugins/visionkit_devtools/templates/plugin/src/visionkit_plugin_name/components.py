"""The components the plugin_name plugin registers. Imported only when a run builds one.

Each follows the contract in ``visionkit_core.plugin.contract``: the task declares a
``TaskSpec`` and provides ``evaluation_callbacks``, ``write_predictions`` and ``export_spec``;
the dataset answers ``data_info()``, ``data_spec()`` and ``preprocessing()`` and builds
predict-time samples from files. Truth and predictions are the contract's ``Sample`` (a dict of
tensors): batches are ``(images, {"label": (N,)})``, ``predict_step`` gives one
``{"label", "probs"}`` per input. ``visionkit plugins check plugin_name`` verifies all of it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visionkit_core import (
    BadSample,
    DataInfo,
    DataSpec,
    ExportSpec,
    Prediction,
    Sample,
    TaskSpec,
    UsageError,
    build_backbone,
)

# -- backbone ------------------------------------------------------------------------------


def tinynet(*, num_classes: int, pretrained: bool = False, width: int = 16) -> nn.Module:
    """Backbone: ``(N, 3, H, W)`` float images -> ``(N, num_classes)`` logits."""
    if pretrained:
        raise UsageError("plugin_name:tinynet has no pretrained weights; drop --pretrained")
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )  # fmt: skip


# -- task ----------------------------------------------------------------------------------


class Normalised(nn.Module):
    """The network as exported: float RGB in ``[0, 1]`` (NCHW), normalisation inside."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net((images - self.mean) / self.std)
        return logits


class SmoothClassifier(L.LightningModule):
    """Task: image classification with label smoothing, written from the contract.

    visionkit passes ``backbone`` (a registered name), ``num_classes`` and ``class_names``
    (from the dataset's ``DataInfo``) and ``lr``; ``label_smoothing`` is this task's own option
    (``--set task.label_smoothing=0.2``). Batches arrive as uint8 images and are normalised
    on the device.
    """

    visionkit_task = TaskSpec(
        name="smooth-classifier",
        monitor="val/acc",
        mode="max",
        needs=("class_names",),
        default_data="plugin_name:toy",
        default_backbone="plugin_name:tinynet",
        predict_outputs=(".csv", ".json"),
        export_formats=("onnx", "torchscript"),
        metrics=("val/acc", "val/loss"),
    )

    def __init__(
        self,
        backbone: str = "plugin_name:tinynet",
        num_classes: int = 2,
        class_names: list[str] | None = None,
        lr: float = 1e-3,
        label_smoothing: float = 0.1,
        backbone_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.preprocessing: dict[str, Any] = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
        net = build_backbone(backbone, num_classes=num_classes, options=backbone_options)
        self.model = Normalised(net, self.preprocessing["mean"], self.preprocessing["std"])
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 images -> float in [0, 1]: train/val batches are tuples, predict batches dicts."""
        if isinstance(batch, dict):
            return {**batch, "image": batch["image"].float() / 255}
        images, *rest = batch
        return (images.float() / 255, *rest)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(images)
        return logits

    def training_step(self, batch: tuple[torch.Tensor, Sample], batch_idx: int) -> torch.Tensor:
        images, truth = batch
        loss: torch.Tensor = self.loss(self(images), truth["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, Sample], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, Sample], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def _evaluate(self, phase: str, batch: tuple[torch.Tensor, Sample]) -> None:
        images, labels = batch[0], batch[1]["label"]
        logits = self(images)
        self.log(f"{phase}/loss", self.loss(logits, labels), on_epoch=True)
        self.log(f"{phase}/acc", (logits.argmax(1) == labels).float().mean(), on_epoch=True)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[Sample]:
        """One Sample ``{"label", "probs"}`` per input (the core pairs them with files)."""
        return [{"label": p.argmax(), "probs": p} for p in self(batch["image"]).softmax(1).cpu()]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"])

    # -- what the core asks of a task -----------------------------------------------------
    def evaluation_callbacks(self, run_dir: Path) -> list[L.Callback]:
        """Callbacks that evaluate during ``fit`` (plots, tables) under ``run_dir``: none here."""
        return []

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        """The best class of each file: to ``output`` (.csv or .json), or as lines to print."""
        rows = []
        for p in predictions:
            best = int(p.value["label"])
            score = round(float(p.value["probs"][best]), 6)
            rows.append({"path": p.path, "label": self.class_names[best], "score": score})
        if output is None:
            return [f"{r['path']}  {r['label']}  {r['score']:.3f}" for r in rows]
        if output.suffix == ".json":
            output.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        else:
            with open(output, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=["path", "label", "score"])
                writer.writeheader()
                writer.writerows(rows)
        return [f"Wrote {len(rows)} predictions to {output}"]

    def export_spec(self, image_size: int) -> ExportSpec:
        """The exported graph: images in [0, 1] -> logits, with a dynamic batch axis."""
        return ExportSpec(
            module=self.model,
            example_input=torch.rand(2, 3, image_size, image_size),
            check_input=torch.rand(3, 3, image_size, image_size),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            sidecar={"class_names": self.class_names},
        )


# -- dataset -------------------------------------------------------------------------------


class ToyDataModule(L.LightningDataModule):
    """Dataset: two classes of random uint8 images, dark and bright (batches stay uint8)."""

    def __init__(
        self, batch_size: int = 32, image_size: int | None = None, seed: int = 42, size: int = 128
    ) -> None:
        super().__init__()
        self.batch_size, self.seed, self.size = batch_size, seed, size
        self.image_size = image_size or 32

    def data_info(self) -> DataInfo:
        """What the task receives (``class_names``, hence ``num_classes``); called before ``setup``."""
        return DataInfo(class_names=["dark", "bright"])

    def data_spec(self) -> DataSpec:
        return DataSpec(splits=("train", "val"), batch="tuple", image_key=0)

    def preprocessing(self) -> dict[str, Any]:
        """Plain values a checkpoint records so that predict and export repeat them."""
        return {"image_size": self.image_size}

    def bad_samples(self) -> list[BadSample]:
        return []  # generated images are never unreadable

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(self.seed)
        labels = torch.arange(self.size) % 2
        s = self.image_size
        images = torch.randint(0, 128, (self.size, 3, s, s), generator=g, dtype=torch.uint8)
        images += (labels * 127).to(torch.uint8).view(-1, 1, 1, 1)
        cut = self.size * 3 // 4
        self.train_set = Labelled(images[:cut], labels[:cut])
        self.val_set = Labelled(images[cut:], labels[cut:])

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    @classmethod
    def predict_dataset(cls, files: list[Path], preprocessing: dict[str, Any]) -> Dataset[dict[str, Any]]:
        """Image files as ``{"image": uint8 CHW, "ok": bool, "size": (h, w)}`` samples."""
        return ImageFiles(files, int(preprocessing["image_size"]))


class Labelled(Dataset[tuple[torch.Tensor, Sample]]):
    """``(image, {"label": label})`` items: the truth is the contract's Sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Sample]:
        return self.images[i], {"label": self.labels[i]}


class ImageFiles(Dataset[dict[str, Any]]):
    """Files resized to the training size; an unreadable file is flagged, not fatal."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = list(files), size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            with Image.open(self.files[i]) as im:
                rgb = im.convert("RGB")
                height, width = rgb.height, rgb.width
                pixels = np.asarray(rgb.resize((self.size, self.size)), dtype=np.uint8)
        except OSError:
            blank = torch.zeros(3, self.size, self.size, dtype=torch.uint8)
            return {"image": blank, "ok": False, "size": torch.tensor([0, 0])}
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
        return {"image": image, "ok": True, "size": torch.tensor([height, width])}


# -- callback and logger -------------------------------------------------------------------


class EpochFile(L.Callback):
    """Callback: appends each finished epoch to ``<run_dir>/<filename>`` (visionkit passes run_dir)."""

    def __init__(self, run_dir: Path, filename: str = "plugin_name-epochs.txt") -> None:
        self.path = Path(run_dir) / filename

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{trainer.current_epoch}\n")


class JsonLinesLogger(Logger):
    """Logger: one JSON line per ``log_metrics`` call in ``<run_dir>/plugin_name-metrics.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.path = Path(run_dir) / "plugin_name-metrics.jsonl"

    @property
    def name(self) -> str:
        return "plugin_name"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
