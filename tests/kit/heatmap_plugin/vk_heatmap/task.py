"""HeatmapKeypoints: a registered feature backbone, a small heatmap head, judged by val/mean_error (min)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from visionkit_core import ExportSpec, Prediction, TaskSpec
from visionkit_core.kit import TaskBase, build_feature_backbone

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


class KeypointError(Metric):
    """Mean distance in pixels between predicted and true keypoints, or with ``threshold`` the
    share within it (PCK)."""

    full_state_update = False

    def __init__(self, threshold: float | None = None) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        dist = (pred - target).norm(dim=-1)
        self.total += dist.sum() if self.threshold is None else (dist <= self.threshold).float().sum()
        self.count += dist.numel()

    def compute(self) -> Tensor:
        return self.total / self.count.clamp(min=1)


class HeatmapHead(nn.Module):
    """Feature maps -> one lateral 1x1 conv each, summed at the finest level, two convs, upsampled
    to the input's resolution: ``(N, K, H, W)`` heatmap logits."""

    def __init__(self, channels: Sequence[int], reduction: int, num_keypoints: int, width: int = 32) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, num_keypoints, 1),
        )
        self.reduction = reduction

    def forward(self, maps: list[Tensor]) -> Tensor:
        size = maps[0].shape[-2:]
        x = sum(
            F.interpolate(conv(m), size=size, mode="bilinear")
            for conv, m in zip(self.lateral, maps, strict=True)
        )
        return F.interpolate(self.fuse(x), scale_factor=self.reduction, mode="bilinear")


def soft_argmax(heatmaps: Tensor) -> Tensor:
    """``(N, K, H, W)`` logits -> ``(N, K, 2)`` expected ``(x, y)`` pixel positions."""
    n, k, h, w = heatmaps.shape
    prob = heatmaps.flatten(2).softmax(-1).view(n, k, h, w)
    xs = torch.arange(w, dtype=prob.dtype, device=prob.device)
    ys = torch.arange(h, dtype=prob.dtype, device=prob.device)
    return torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], dim=-1)


class Exported(nn.Module):
    """``[0, 1]`` images -> keypoints ``(N, K, 2)`` in input pixels and heatmap logits; normalised inside."""

    def __init__(self, task: HeatmapKeypoints) -> None:
        super().__init__()
        self.backbone, self.head = task.backbone, task.head
        self.register_buffer("mean", task.norm_mean.clone())
        self.register_buffer("std", task.norm_std.clone())

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        heatmaps = self.head(self.backbone((images - self.mean) / self.std))
        return soft_argmax(heatmaps), heatmaps


class HeatmapKeypoints(TaskBase):
    visionkit_task = TaskSpec(
        name="heatmap-keypoints",
        monitor="val/mean_error",
        mode="min",
        needs=("keypoint_names",),
        default_data="heat:dots",
        default_backbone="timm:test_resnet",
        predict_outputs=(".json",),
        export_formats=("onnx",),
        metrics=("val/mean_error", "val/pck"),
    )

    def __init__(
        self,
        keypoint_names: list[str],
        backbone: str = "timm:test_resnet",
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        pretrained: bool = False,
        weights: str | None = None,
        backbone_options: dict[str, Any] | None = None,
        out_indices: tuple[int, ...] = (1, 2),
        pck_threshold: float = 2.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        features = build_feature_backbone(
            backbone, pretrained, weights, out_indices, **(backbone_options or {})
        )
        self.backbone = features.module
        self.head = HeatmapHead(features.channels, features.reductions[0], len(keypoint_names))
        pre = getattr(self.backbone, "visionkit_preprocessing", None) or {}
        mean, std = pre.get("mean", IMAGENET[0]), pre.get("std", IMAGENET[1])
        self.set_normalization(mean, std)
        self.preprocessing = {"mean": list(mean), "std": list(std)}
        self.val_error, self.val_pck = KeypointError(), KeypointError(pck_threshold)

    @property
    def keypoint_names(self) -> list[str]:
        return [str(name) for name in self.hparams["keypoint_names"]]

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def _loss(self, heatmaps: Tensor, points: Tensor) -> Tensor:
        n, k, h, w = heatmaps.shape
        xy = points.round().long()
        target = xy[..., 1].clamp(0, h - 1) * w + xy[..., 0].clamp(0, w - 1)
        return F.cross_entropy(heatmaps.reshape(n * k, h * w), target.reshape(-1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(self(batch[0]), batch[1])
        self.log("train/loss", loss, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        heatmaps = self(batch[0])
        self.log("val/loss", self._loss(heatmaps, batch[1]), on_epoch=True)
        pred = soft_argmax(heatmaps)
        self.val_error(pred, batch[1])
        self.val_pck(pred, batch[1])
        self.log("val/mean_error", self.val_error, on_epoch=True, prog_bar=True)
        self.log("val/pck", self.val_pck, on_epoch=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, list[float]]]:
        heatmaps = self(batch["image"])
        points = soft_argmax(heatmaps).cpu()
        h, w = heatmaps.shape[-2:]
        out = []
        for pts, (height, width) in zip(points, batch["size"], strict=True):
            scaled = pts * torch.tensor([width / w, height / h])  # back to the original image's pixels
            out.append(
                {
                    name: [round(float(v), 2) for v in p]
                    for name, p in zip(self.keypoint_names, scaled, strict=True)
                }
            )
        return out

    def write_predictions(
        self, predictions: list[Prediction], output: Path | None, options: Mapping[str, Any]
    ) -> list[str]:
        rows = [{"path": p.path, "keypoints": p.value, "size": list(p.size or ())} for p in predictions]
        if output is None:
            return [f"{r['path']}  {json.dumps(r['keypoints'])}" for r in rows]
        output.write_text(json.dumps(rows, indent=2))
        return [f"Wrote {len(rows)} predictions to {output}"]

    def _exported_forward(self, exported: nn.Module, images: Tensor) -> Tensor:
        return exported(self.denormalize(images))[1]  # export --check: the task's forward, through the graph

    def export_spec(self, image_size: int) -> ExportSpec:
        return ExportSpec(
            module=Exported(self),
            example_input=torch.rand(2, 3, image_size, image_size),
            check_input=torch.rand(3, 3, image_size, image_size),
            input_names=["images"],
            output_names=["keypoints", "heatmaps"],
            dynamic_axes={"images": {0: "batch"}, "keypoints": {0: "batch"}, "heatmaps": {0: "batch"}},
            sidecar={"keypoint_names": self.keypoint_names, "keypoints": "(N, K, 2) x, y in input pixels"},
            task_forward=self._exported_forward,
        )
