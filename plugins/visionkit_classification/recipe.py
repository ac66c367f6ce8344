"""Training-recipe pieces the classification tasks share: batch mixing, class weights, the head split.

- :class:`BatchMix`: torchvision v2 ``MixUp`` / ``CutMix`` on a whole training batch (one of
  the two per batch when both are on, as timm does), giving soft targets ``(N, C)``.
- :func:`balanced_weights`: loss weights from training class counts (``--class-weights
  balanced``): ``n / (C * n_c)`` for single-label data, ``negatives / positives`` per label
  (BCE ``pos_weight``) for multi-label data.
- :func:`head_of`: which module of a backbone is its classifier head, so ``backbone`` (for
  Lightning's ``BackboneFinetuning``) can be everything else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from visionkit_core import UsageError

CLASS_WEIGHTS = ("none", "balanced")


class BatchMix(nn.Module):
    """MixUp and/or CutMix on normalised float images; targets become probabilities ``(N, C)``.

    ``targets`` may be class indices ``(N,)`` or multi-hot / soft targets ``(N, C)`` (multi-label
    data mixes its label sets the same way). Draws from torch's global RNG, which visionkit
    seeds and checkpoints, so runs and resumes repeat.
    """

    def __init__(self, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0) -> None:
        super().__init__()
        ops: list[v2.Transform] = []
        if mixup > 0:
            ops.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
        if cutmix > 0:
            ops.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
        if not ops:
            raise ValueError("BatchMix needs mixup > 0 or cutmix > 0")
        self.num_classes = num_classes
        self.op: v2.Transform = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)

    def forward(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if targets.ndim == 2:
            targets = targets.float()
        mixed, soft = self.op(images, targets)
        return mixed, soft.to(images.dtype if images.is_floating_point() else torch.float32)


def make_mix(num_classes: int, mixup: float | None, cutmix: float | None) -> BatchMix | None:
    """A :class:`BatchMix`, or ``None`` when both alphas are off (0 or unset)."""
    mixup, cutmix = float(mixup or 0.0), float(cutmix or 0.0)
    if mixup < 0 or cutmix < 0:
        raise UsageError(f"mixup and cutmix are Beta(alpha, alpha) parameters >= 0, got {mixup}, {cutmix}")
    if mixup == 0 and cutmix == 0:
        return None
    return BatchMix(num_classes, mixup, cutmix)


def check_class_weights(class_weights: str, class_counts: Sequence[int] | None, num_classes: int) -> None:
    if class_weights not in CLASS_WEIGHTS:
        raise UsageError(f"class_weights {class_weights!r} is not one of: {', '.join(CLASS_WEIGHTS)}")
    if class_weights == "balanced":
        if not class_counts:
            raise UsageError(
                "--class-weights balanced needs the training class counts, which this dataset does not "
                "report (DataInfo.extra['class_counts']); drop the flag or use a dataset that does"
            )
        if len(class_counts) != num_classes:
            raise UsageError(f"got {len(class_counts)} class counts for {num_classes} classes")


def balanced_weights(counts: Sequence[int], *, multilabel: bool = False, total: int | None = None) -> Tensor:
    """Loss weights from training counts; a class without samples gets weight 0 (single-label) or 1.

    Single-label: ``n / (C * n_c)`` (scikit-learn's "balanced"; the mean weight of a sample is 1).
    Multi-label: ``(total - n_c) / n_c`` per label, BCE's ``pos_weight`` (``total``: images).
    """
    c = torch.tensor([float(x) for x in counts])
    if multilabel:
        if total is None:
            raise ValueError("multi-label weights need the number of images")
        return torch.where(c > 0, (float(total) - c) / c.clamp(min=1.0), torch.ones_like(c))
    n = float(c.sum())
    return torch.where(c > 0, n / (len(c) * c.clamp(min=1.0)), torch.zeros_like(c))


def head_of(model: nn.Module, num_classes: int) -> nn.Module | None:
    """The classifier head of ``model``: timm's ``get_classifier()``, else the last layer with
    ``num_classes`` outputs (a Linear or 1x1 Conv2d), else ``None``."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        head = getter()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    found: nn.Module | None = None
    for module in model.modules():
        if (isinstance(module, nn.Linear) and module.out_features == num_classes) or (
            isinstance(module, nn.Conv2d) and module.out_channels == num_classes
        ):
            found = module
    return found


def backbone_modules(model: nn.Module, num_classes: int) -> nn.ModuleList:
    """The leaf modules with parameters outside the head of ``model`` (what ``--freeze-backbone`` freezes)."""
    head = head_of(model, num_classes)
    inside = {id(m) for m in head.modules()} if head is not None else set()
    leaves = [
        m
        for m in model.modules()
        if id(m) not in inside
        and not any(True for _ in m.children())
        and any(True for _ in m.parameters(recurse=False))
    ]
    return nn.ModuleList(leaves)


def format_counts(class_names: Sequence[str], counts: Sequence[int], *, limit: int = 30) -> str:
    """``"cat 120, dog 14 (imbalance 8.6x)"``: the training counts a run reports at its start."""
    pairs = [f"{name} {int(n)}" for name, n in zip(class_names, counts, strict=True)]
    shown = ", ".join(pairs[:limit]) + (f", ... ({len(pairs) - limit} more)" if len(pairs) > limit else "")
    present = [int(n) for n in counts if n > 0]
    ratio = f" (largest/smallest {max(present) / min(present):.1f}x)" if len(present) > 1 else ""
    return shown + ratio
