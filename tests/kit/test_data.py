"""The kit's data base: seeded datasets that skip bad samples (also in DataLoader workers),
the bad-sample log, the datamodule's loaders and ``--sampler balanced``, predict images."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit_core import UsageError
from visionkit_core.kit.data import PredictImages, SeededDataModule, SeededDataset, decode_image
from visionkit_core.kit.skips import BadSampleLog, UnusableSample


class Numbers(SeededDataset):
    """Sample i is ``(i, a random draw)``; the samples listed in ``bad`` cannot be used."""

    def __init__(self, n: int, bad: set[int] = frozenset(), on_bad_image: str = "skip") -> None:  # type: ignore[assignment]
        super().__init__(list(range(n)), on_bad_image)
        self.bad = bad
        self.targets = [i % 2 for i in range(n)]

    def load(self, index: int) -> tuple[Any, ...]:
        if index in self.bad:
            raise UnusableSample(f"f{index}.png", f"broken {index}")
        return index, float(torch.rand(()))


def collate(items: list[tuple[Any, ...]]) -> tuple[list[int], list[float], list[Any]]:
    return [i for i, _, _ in items], [r for _, r, _ in items], [s for it in items for s in it[2]]


class NumbersData(SeededDataModule):
    collate = staticmethod(collate)

    def __init__(self, dataset: Numbers, batch_size: int = 4, num_workers: int = 0, sampler: str = "default"):
        super().__init__()
        self.batch_size, self.seed, self.num_workers, self.sampler = batch_size, 7, num_workers, sampler
        self.datasets = {"train": dataset, "val": dataset}


def test_the_seed_of_a_key_fixes_the_random_transform() -> None:
    ds = Numbers(4)
    assert ds[(2, 123)] == ds[(2, 123)] and ds[(2, 123)] != ds[(2, 124)]
    assert ds[(2, 123)][0] == 2 and ds[(2, 123)][2] == ()


def test_a_bad_sample_is_replaced_by_the_next_good_one_and_travels_with_it() -> None:
    ds = Numbers(5, bad={1, 2})
    index, _, skipped = ds[1]
    assert index == 3 and skipped == (("f1.png", "broken 1"), ("f2.png", "broken 2"))
    assert ds[1][2] == skipped  # reported again: every worker's items carry it


def test_error_mode_and_an_unusable_dataset_raise_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"f1\.png: broken 1 \(--on-bad-image error\)"):
        Numbers(3, bad={1}, on_bad_image="error")[1]
    with pytest.raises(UsageError, match="none of the 2 samples can be used"):
        Numbers(2, bad={0, 1})[0]


def test_the_log_keeps_every_reason_once_and_warns_once_each() -> None:
    log = BadSampleLog("skipped {path}: {reason}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert log.record("a.png", "unreadable") and not log.record("a.png", "unreadable")
        assert log.record("a.png", "wrong size")
    assert [str(w.message) for w in caught] == ["skipped a.png: unreadable", "skipped a.png: wrong size"]
    assert [(b.path, b.reason) for b in log.bad_samples()] == [
        ("a.png", "unreadable"),
        ("a.png", "wrong size"),
    ]
    assert log.paths == {"a.png"}


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_samples_found_in_loader_workers_reach_the_datamodule(workers: int) -> None:
    dm = NumbersData(Numbers(8, bad={3, 5}), num_workers=workers)
    with pytest.warns(UserWarning, match="replaced by another sample"):
        batches = [dm.on_before_batch_transfer(b, 0) for b in dm.val_dataloader()]
    assert [len(b) for b in batches] == [2, 2]  # the skipped entries are stripped
    assert [i for b in batches for i in b[0]] == [0, 1, 2, 4, 4, 6, 6, 7]
    assert [(b.path, b.reason) for b in dm.bad_samples()] == [("f3.png", "broken 3"), ("f5.png", "broken 5")]


def test_the_train_loader_is_seeded_and_drops_the_last_partial_batch() -> None:
    dm = NumbersData(Numbers(10))
    first = [b[:2] for b in dm.train_dataloader()]
    again = [b[:2] for b in NumbersData(Numbers(10)).train_dataloader()]
    assert first == again and [len(b[0]) for b in first] == [4, 4]


def test_balanced_sampling_draws_from_the_dataset_targets() -> None:
    ds = Numbers(40)
    ds.targets = [0] * 36 + [1] * 4
    dm = NumbersData(ds, batch_size=40, sampler="balanced")
    drawn = [ds.targets[i] for batch in dm.train_dataloader() for i in batch[0]]
    assert 10 < sum(drawn) < 30  # about half from the rare class (4 of 40 without balancing)


def test_predict_images_give_ok_false_for_unreadable_files(tmp_path: Path) -> None:
    Image.fromarray(np.full((10, 20, 3), 200, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"junk")
    ds = PredictImages([tmp_path / "a.png", tmp_path / "b.png"], 8, lambda im: im[:, :8, :8])
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 8, 8) and batch["ok"].tolist() == [True, False]
    assert batch["size"] == [(10, 20), (8, 8)] and batch["path"][1].endswith("b.png")
    assert decode_image(tmp_path / "a.png").shape == (3, 10, 20)


class Folder(SeededDataModule):
    default_image_size = 64
    min_image_size = 16

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 8,
        image_size: int | None = None,
        val_split: float = 0.2,
        seed: int = 1,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        sampler: str = "default",
        zoom: float = 1.0,
    ) -> None:
        super().__init__()
        self.configure(locals(), [] if zoom > 0 else [f"zoom must be > 0, got {zoom}"])


def test_configure_keeps_the_common_options_and_saves_every_argument(tmp_path: Path) -> None:
    dm = Folder(str(tmp_path), batch_size=4, zoom=2.0)
    assert (dm.root, dm.batch_size, dm.image_size, dm.seed, dm.sampler) == (tmp_path, 4, 64, 1, "default")
    assert dm.hparams["root"] == str(tmp_path) and dm.hparams["zoom"] == 2.0 and "self" not in dm.hparams
    with pytest.raises(UsageError) as err:
        Folder(batch_size=0, image_size=8, on_bad_image="maybe", sampler="rare", zoom=0)
    assert str(err.value).split("; ") == [
        "batch_size must be at least 1, got 0",
        "on_bad_image must be 'skip' or 'error', got 'maybe'",
        "--sampler 'rare' is not one of: default, balanced",
        "image_size must be at least 16, got 8",
        "zoom must be > 0, got 0",
    ]


def test_sharded_evaluation_counts_every_sample_once_over_the_ranks() -> None:
    from visionkit_core.kit.data import ShardedEval

    shards = [list(ShardedEval(7, 3, rank)) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]] and sorted(i for shard in shards for i in shard) == list(
        range(7)
    )
    data = NumbersData(Numbers(5))
    data.shard_eval = True
    assert isinstance(data.val_dataloader().sampler, ShardedEval) and len(data.val_dataloader()) == 2


def test_bad_samples_found_up_front_are_refused_in_one_listed_error(tmp_path: Path) -> None:
    from visionkit_core import BadSample

    dm = Folder(str(tmp_path))
    dm.refuse_bad_samples([])  # nothing to refuse
    with pytest.raises(UsageError) as err:
        dm.refuse_bad_samples([BadSample(f"{i}.png", "broken") for i in range(23)])
    text = str(err.value)
    assert text.startswith(f"23 problems in the training/validation data of {str(tmp_path)!r}")
    assert "0.png: broken" in text and "19.png" in text and "20.png" not in text and "... and 3 more" in text
    with pytest.warns(UserWarning, match="left out 2 images with unusable annotations"):
        dm.warn_left_out(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.warn_left_out(2)  # once
