"""AdamW with a per-step linear warmup then cosine decay, over parameter groups.

The schedule is computed when ``configure_optimizers`` runs, from the trainer's
``estimated_stepping_batches`` and ``max_epochs``, so a run resumed with more epochs
(``--resume last --epochs N+1``) gets a schedule as long as the new run, never a fixed step
count that the extra epoch would overrun. No weight decay on biases and norm parameters;
warmup of at most one epoch and at most :data:`WARMUP_FRACTION` of all steps; cosine down to
:data:`MIN_LR_RATIO` of the base rate. Parameter groups added later (Lightning's
``BackboneFinetuning`` adds the backbone's when ``--freeze-backbone`` unfreezes it) keep the
rate their adder gives them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

#: Warmup length: at most one epoch and at most this share of all optimizer steps.
WARMUP_FRACTION = 0.1
#: The cosine schedule ends at this fraction of the base learning rate.
MIN_LR_RATIO = 0.01


class OwnGroupsLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` over the param groups it was made with; groups added later keep their own lr."""

    def get_lr(self) -> list[Any]:  # type: ignore[override]
        own = super().get_lr()
        return [*own, *(group["lr"] for group in self.optimizer.param_groups[len(own) :])]


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """The trainable ``params`` in two groups: weights (decayed) and biases/norms (not decayed)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in params:
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def schedule_lengths(trainer: Any) -> tuple[int | None, int]:
    """``(total optimizer steps, or None when unknown; warmup steps)`` of ``trainer``'s run."""
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


def adamw_warmup_cosine(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    trainer: Any,
    groups: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer: AdamW and the per-step schedule.

    ``groups`` overrides :func:`param_groups` of ``module`` (e.g. a lower rate for a pretrained
    encoder: a group may carry its own ``lr``, the schedule scales each group's own rate).
    """
    optimizer = torch.optim.AdamW(groups or param_groups(module.parameters(), weight_decay), lr=lr)
    total, warmup = schedule_lengths(trainer)
    scheduler = OwnGroupsLambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
