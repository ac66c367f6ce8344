"""The kit's seeded sampler: order and seeds from (seed, epoch), DDP shards, balanced draws."""

from __future__ import annotations

from collections import Counter

import pytest

from visionkit_core.kit.sampler import EpochSeededSampler, balanced_weights


def _epoch(sampler: EpochSeededSampler, epoch: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_order_and_seeds_depend_only_on_seed_and_epoch() -> None:
    a, b = EpochSeededSampler(10, seed=3), EpochSeededSampler(10, seed=3)
    assert _epoch(a, 2) == _epoch(b, 2)
    assert sorted(i for i, _ in _epoch(a, 0)) == list(range(10))  # a permutation
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(EpochSeededSampler(10, seed=4), 0)


def test_ranks_take_interleaved_positions_of_one_global_order() -> None:
    whole = _epoch(EpochSeededSampler(7, seed=1), 5)
    shards = [_epoch(EpochSeededSampler(7, seed=1, num_replicas=2, rank=r), 5) for r in (0, 1)]
    assert [len(s) for s in shards] == [4, 4]  # padded by wrapping around, like DistributedSampler
    assert shards[0] == whole[0::2] and shards[1] == [*whole[1::2], whole[0]]


def test_balanced_weights_draw_every_class_about_equally() -> None:
    targets = [0] * 90 + [1] * 10
    sampler = EpochSeededSampler(100, seed=0, weights=balanced_weights(targets))
    drawn = Counter(targets[i] for e in range(10) for i, _ in _epoch(sampler, e))
    assert 0.4 < drawn[1] / 1000 < 0.6


def test_balanced_weights_of_label_sets_follow_the_rarest_label() -> None:
    weights = balanced_weights([(1, 0), (1, 0), (1, 1), (0, 0)])
    assert weights == [pytest.approx(1 / 3), pytest.approx(1 / 3), 1.0, 1.0]
    assert balanced_weights([]) == []


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rank 2"):
        EpochSeededSampler(4, seed=0, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="3 weights for 4 samples"):
        EpochSeededSampler(4, seed=0, weights=[1.0, 1.0, 1.0])
