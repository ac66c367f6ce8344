"""Holding out a validation split: a seeded share of the training samples. Torch-free."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from visionkit_core.errors import UsageError

T = TypeVar("T")


def seeded_split(
    samples: Sequence[T], val_split: float, seed: int, noun: str = "samples"
) -> tuple[list[T], list[T]]:
    """``(train, val)``: ``round(len * val_split)`` samples (at least one) held out, chosen by ``seed``.

    Both keep the samples' order; the same ``seed`` always holds out the same samples. A
    ``UsageError`` (naming ``noun``) when nothing would be left to train on.
    """
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(samples) * val_split))
    if n_val >= len(samples):
        raise UsageError(f"{len(samples)} training {noun} cannot be split by --val-split {val_split}")
    held = set(order[:n_val])
    return [s for i, s in enumerate(samples) if i not in held], [
        s for i, s in enumerate(samples) if i in held
    ]
