"""``example:tinynet``: a backbone is any ``nn.Module`` mapping ``(N, 3, H, W)`` to ``(N, num_classes)``."""

from __future__ import annotations

from torch import nn

from visionkit_core import UsageError


def tinynet(*, num_classes: int, pretrained: bool = False, width: int = 16) -> nn.Module:
    """Three stride-2 conv blocks, global average pooling and a linear head.

    ``width`` (``--set backbone.width=32``) is the first block's channel count; the
    others double it. There are no published weights, so ``--pretrained`` is an error.
    """
    if pretrained:
        raise UsageError(
            "example:tinynet has no pretrained weights; drop --pretrained (or use --weights FILE)"
        )
    if width < 1:
        raise UsageError(f"example:tinynet: width must be at least 1, got {width}")

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]

    model = nn.Sequential(
        *block(3, width),
        *block(width, 2 * width),
        *block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )
    # The task normalises uint8 images on the device with these statistics (default: ImageNet's).
    model.visionkit_preprocessing = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    return model
