"""The training recipe the baselines share with visionkit, in plain PyTorch (no Lightning import).

visionkit's classification task trains with AdamW (no weight decay on biases and norm
parameters), a per-step linear warm-up + cosine schedule, and visits samples in one seeded
permutation per epoch. The baselines do the same, so that for one seed all three runs see
the same batches and their losses can be compared step by step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler


class SeededOrder(Sampler[int]):
    """A permutation per epoch from ``seed + 1_000_003 * epoch`` (the order visionkit uses)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())


def warmup_cosine(total: int, warmup: int, floor: float = 0.01) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def empty_record() -> dict[str, Any]:
    """Step timings: ``epoch_start`` per epoch; ``step_end``/``step_cpu``/``step_epoch``/``loss`` per step."""
    return {
        "epoch_start": [],
        "step_end": [],
        "step_cpu": [],
        "step_epoch": [],
        "loss": [],
        "train_end": None,
    }


def save_record(path: str, record: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
