"""BrightnessRegressor: any backbone with one output, MSE loss, judged by val/mae (min)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanAbsoluteError

from visionkit_core import ExportSpec, Prediction, TaskSpec, build_backbone


class Exported(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)


class BrightnessRegressor(L.LightningModule):
    visionkit_task = TaskSpec(
        name="brightness",
        monitor="val/mae",
        mode="min",
        needs=(),
        default_data="probe:brightness",
        default_backbone="timm:test_resnet",
        predict_outputs=(".json",),
        export_formats=("onnx",),
    )

    def __init__(
        self,
        backbone: str = "timm:test_resnet",
        lr: float = 1e-3,
        target_range: list[float] | None = None,
        nan_at_step: int = -1,
        nan_on_rank: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_backbone(backbone, num_classes=1)
        self.preprocessing = {"scale": 1 / 255}
        self.val_mae = MeanAbsoluteError()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return {**batch, "image": batch["image"].float() / 255.0}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(self(batch["image"]), batch["target"])
        if self.global_step == self.hparams.nan_at_step and self.global_rank == self.hparams.nan_on_rank:
            loss = loss * float("nan")  # the rank-failure tests' fault: one rank's loss only
        self.log("train/loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch["image"])
        self.val_mae(pred, batch["target"])
        self.log("val/mae", self.val_mae, on_epoch=True)
        self.log("val/loss", torch.nn.functional.mse_loss(pred, batch["target"]), on_epoch=True)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[float]:
        return self(batch["image"]).tolist()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def evaluation_callbacks(self, run_dir: Path) -> list[Any]:
        return []

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        rows = [
            {"path": p.path, "brightness": round(float(p.value), 6), "size": list(p.size or ())}
            for p in predictions
        ]
        if output is None:
            return [f"{r['path']}  {r['brightness']:.3f}" for r in rows]
        output.write_text(json.dumps(rows, indent=2))
        return [f"Wrote {len(rows)} predictions to {output}"]

    def export_spec(self, image_size: int) -> ExportSpec:
        return ExportSpec(
            module=Exported(self.net),
            example_input=torch.rand(2, 3, image_size, image_size),
            check_input=torch.rand(3, 3, image_size, image_size),
            input_names=["images"],
            output_names=["brightness"],
            dynamic_axes={"images": {0: "batch"}, "brightness": {0: "batch"}},
            sidecar={"output": {"name": "brightness", "range": [0, 1]}},
        )
