"""A shuffling sampler whose order and augmentation seeds depend only on (seed, epoch).

(A copy of visionkit_segmentation's sampler: plugins share nothing but visionkit_core.)

Resuming a run from a checkpoint then replays exactly the batches and augmentations an
uninterrupted run would have seen: nothing depends on RNG state carried inside DataLoader
workers or on how many iterators were created before. Lightning calls ``set_epoch`` at the
start of every epoch.

It is a ``DistributedSampler``, so under DDP Lightning uses it as it is instead of wrapping
it: rank ``r`` of ``w`` takes positions ``r, r + w, r + 2w, ...`` of the one global order, so
the union of the ranks' k-th batches (per-device batch ``B / w``) is exactly the k-th batch
of a single-process run with batch ``B``, with the same augmentation seeds.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler

_EPOCH_STRIDE = 1_000_003  # any large prime: keeps per-epoch generator seeds apart


class EpochSeededSampler(DistributedSampler):  # type: ignore[type-arg]
    """Yields ``(index, sample_seed)`` in an order fixed by ``(seed, epoch)``, sharded by rank."""

    def __init__(self, num_samples: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        # no super().__init__: it needs a dataset and may query torch.distributed; set what it would
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.seed = int(seed)
        self.shuffle = True
        self.drop_last = False
        self.total = num_samples
        self.num_samples = -(-num_samples // num_replicas)  # per rank, padded like DistributedSampler
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (called by Lightning's fit loop)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        gen = torch.Generator().manual_seed(self.seed + _EPOCH_STRIDE * self.epoch)
        order = torch.randperm(self.total, generator=gen).tolist()
        seeds = torch.randint(0, 2**62, (self.total,), generator=gen).tolist()
        pairs = list(zip(order, seeds, strict=True))
        if self.total_size > self.total:  # pad by wrapping around so every rank gets as many
            pairs += pairs[: self.total_size - self.total]
        return iter(pairs[self.rank : self.total_size : self.num_replicas])
