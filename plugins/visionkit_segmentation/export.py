"""The exported segmentation graph: float32 [0, 1] RGB NCHW in, logits (N, C, H, W) out.

Normalisation is inside the graph; batch, height and width are dynamic (the network pads to
its stride and crops back itself), so ``check_input`` differs from ``example_input`` in batch
size and image size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from visionkit_core import ExportSpec
from visionkit_core.kit.export import image_input

if TYPE_CHECKING:
    from visionkit_segmentation.model import Segmenter


class ExportedSegmenter(nn.Module):
    """``(images - mean) / std`` then the network: what runs outside visionkit."""

    def __init__(self, task: Segmenter) -> None:
        super().__init__()
        self.net = task.model
        self.register_buffer("mean", task.norm_mean.detach().clone().float())
        self.register_buffer("std", task.norm_std.detach().clone().float())

    def forward(self, images: Tensor) -> Tensor:
        # (no "type:" comment here: TorchScript would parse it)
        return self.net((images - self.mean) / self.std)


def export_spec(task: Segmenter, image_size: int) -> ExportSpec:
    """What ``visionkit export`` traces and checks, and what the sidecar says about the output."""
    module = ExportedSegmenter(task).eval()
    for param in module.parameters():
        param.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, image_size, image_size, generator=gen)
    # another batch size and a size off the network's stride: both axes must stay dynamic
    other = image_size + 32 + 8
    check = torch.rand(3, 3, other, other - 16, generator=gen)
    axes = {0: "batch", 2: "height", 3: "width"}
    sidecar: dict[str, Any] = {
        "task": "segmentation",
        "class_names": list(task.class_names),
        "ignore_index": int(task.hparams.ignore_index),
        "input": image_input(
            task.preprocessing, resize=[image_size, image_size], interpolation="bilinear", any_size=True
        ),
        "output": {
            "name": "logits",
            "shape": ["batch", len(task.class_names), "height", "width"],
            "meaning": "per-pixel class scores; argmax over dim 1 gives the class index mask",
            "softmax": False,
        },
        "arch": task.hparams.arch,
        "backbone": task.hparams.backbone,
    }
    return ExportSpec(
        module=module,
        example_input=example,
        check_input=check,
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": dict(axes), "logits": dict(axes)},
        sidecar=sidecar,
        tolerance=1e-3,
        task_forward=lambda exported, x: exported(task.denormalize(x)),  # forward takes normalised images
    )
