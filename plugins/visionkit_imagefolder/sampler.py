"""A shuffling sampler whose order and augmentation seeds depend only on (seed, epoch).

Resuming a run from a checkpoint then replays exactly the batches and augmentations an
uninterrupted run would have seen: nothing depends on RNG state carried inside DataLoader
workers or on how many iterators were created before. Lightning calls ``set_epoch`` at the
start of every epoch (as it does for ``DistributedSampler``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

_EPOCH_STRIDE = 1_000_003  # any large prime: keeps per-epoch generator seeds apart


class EpochSeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` in an order fixed by ``(seed, epoch)``."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (called by Lightning's fit loop)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed + _EPOCH_STRIDE * self.epoch)
        order = torch.randperm(self.num_samples, generator=gen).tolist()
        seeds = torch.randint(0, 2**62, (self.num_samples,), generator=gen).tolist()
        return iter(zip(order, seeds, strict=True))
