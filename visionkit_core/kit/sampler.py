"""A shuffling sampler whose order and augmentation seeds depend only on (seed, epoch).

Resuming a run from a checkpoint then replays exactly the batches and augmentations an
uninterrupted run would have seen: nothing depends on RNG state carried inside DataLoader
workers or on how many iterators were created before. Lightning calls ``set_epoch`` at the
start of every epoch.

It is a ``DistributedSampler``, so under DDP Lightning uses it as it is instead of wrapping
it: rank ``r`` of ``w`` takes positions ``r, r + w, r + 2w, ...`` of the one global order, so
the union of the ranks' k-th batches (per-device batch ``B / w``) is exactly the k-th batch
of a single-process run with batch ``B``, with the same augmentation seeds.

Datasets take the ``(index, sample_seed)`` pairs through
:class:`visionkit_core.kit.data.SeededDataset`. With ``weights`` (``--sampler balanced``, see
:func:`balanced_weights`) the global order is drawn with replacement in proportion
to the weights, from the same ``(seed, epoch)`` generator, and sharded the same way:
every rank draws the one global order and takes its positions, so DDP changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DistributedSampler

_EPOCH_STRIDE = 1_000_003  # any large prime: keeps per-epoch generator seeds apart


class EpochSeededSampler(DistributedSampler):  # type: ignore[type-arg]
    """Yields ``(index, sample_seed)`` in an order fixed by ``(seed, epoch)``, sharded by rank."""

    def __init__(
        self,
        num_samples: int,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        weights: Sequence[float] | None = None,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if weights is not None and len(weights) != num_samples:
            raise ValueError(f"got {len(weights)} weights for {num_samples} samples")
        self.weights = torch.as_tensor(weights, dtype=torch.double) if weights is not None else None
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
        if self.weights is None:
            order = torch.randperm(self.total, generator=gen).tolist()
        else:
            order = torch.multinomial(self.weights, self.total, replacement=True, generator=gen).tolist()
        seeds = torch.randint(0, 2**62, (self.total,), generator=gen).tolist()
        pairs = list(zip(order, seeds, strict=True))
        if self.total_size > self.total:  # pad by wrapping around so every rank gets as many
            pairs += pairs[: self.total_size - self.total]
        return iter(pairs[self.rank : self.total_size : self.num_replicas])


def balanced_weights(targets: Sequence[Any]) -> list[float]:
    """Per-sample weights that draw every class equally often (``--sampler balanced``).

    ``targets`` are class indices, or multi-hot tuples for multi-label data: a sample then
    weighs as much as its rarest label (samples without labels form one more group).
    """
    if not targets:
        return []
    if isinstance(targets[0], (tuple, list)):
        keys = [tuple(i for i, v in enumerate(t) if v) for t in targets]
        counts: Counter[Any] = Counter(c for k in keys for c in k)
        empty = sum(1 for k in keys if not k)
        return [max(1.0 / counts[c] for c in k) if k else 1.0 / empty for k in keys]
    counts = Counter(targets)
    return [1.0 / counts[t] for t in targets]
