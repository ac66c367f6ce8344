"""AdamW with a per-step linear warmup then cosine decay (the schedule the built-in tasks share).

A copy of the classification task's schedule, kept here because plugins share nothing but
``visionkit_core``: no weight decay on biases and norm parameters, warmup of at most one
epoch and at most :data:`WARMUP_FRACTION` of all steps, cosine down to :data:`MIN_LR_RATIO`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

WARMUP_FRACTION = 0.1
MIN_LR_RATIO = 0.01


def adamw_warmup_cosine(module: nn.Module, lr: float, weight_decay: float, trainer: Any) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer for ``module`` trained by ``trainer``."""
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    total, warmup = schedule_lengths(trainer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def schedule_lengths(trainer: Any) -> tuple[int | None, int]:
    """(total optimizer steps or None when unknown, warmup steps)."""
    total_f = float(trainer.estimated_stepping_batches)
    if not math.isfinite(total_f) or total_f < 1:
        return None, 0
    total = int(total_f)
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
    return total, min(max(1, total // epochs), int(total * WARMUP_FRACTION))


def lr_factor(step: int, total: int | None, warmup: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if total is None:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * progress))
