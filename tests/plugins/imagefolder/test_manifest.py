"""CSV manifests: parsing, bad rows by line number, splits, the datamodule's batches, data check, sampler."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from recipe_data import write_label_manifest, write_multilabel_manifest
from visionkit_imagefolder.manifest import read_manifest, stratified_rows
from visionkit_imagefolder.manifest_datamodule import ManifestDataModule

from visionkit_core import UsageError
from visionkit_core.kit.sampler import EpochSeededSampler, balanced_weights


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data.csv: cat 9, dog 3 (imbalanced), plus three bad rows appended (lines 14-16)."""
    root = tmp_path_factory.mktemp("manifest")
    csv = write_label_manifest(root, {"cat": 9, "dog": 3})
    with csv.open("a", encoding="utf-8") as f:
        f.write("files/gone.jpg,cat\n")  # line 14: missing file
        f.write("files/cat_0.jpg,\n")  # line 15: empty label
        f.write(f"{(root / 'files' / 'dog_0.jpg').resolve()},dog\n")  # line 16: absolute path, fine
    return csv


def test_rows_resolve_relative_to_the_csv_and_bad_rows_keep_their_line(labelled: Path) -> None:
    m = read_manifest(labelled)
    assert not m.multilabel and not m.has_split
    assert m.classes == ["cat", "dog"]
    assert len(m.rows) == 13
    assert all(os.path.isfile(r.path) for r in m.rows)
    assert [(p.line, p.reason) for p in m.problems] == [
        (14, "missing file 'files/gone.jpg'"),
        (15, "empty label for 'files/cat_0.jpg'"),
    ]
    assert m.bad_samples()[0].describe() == f"{labelled}:14: missing file 'files/gone.jpg'"


def test_unknown_split_values_are_bad_rows_and_known_ones_are_used(tmp_path: Path) -> None:
    write_label_manifest(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "s.csv").write_text(
        "path,label,split\nfiles/a_0.jpg,a,train\nfiles/a_1.jpg,a,VALID\nfiles/b_0.jpg,b,train\n"
        "files/b_1.jpg,b,holdout\n",
        encoding="utf-8",
    )
    m = read_manifest(tmp_path / "s.csv")
    assert [(r.line, r.split) for r in m.rows] == [(2, "train"), (3, "val"), (4, "train")]
    assert [(p.line, p.reason) for p in m.problems] == [
        (5, "unknown split 'holdout' for 'files/b_1.jpg' (use train, val or test)")
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("file,label", "has no 'path' column"),
        ("path,category", "has no 'label' or 'labels' column"),
        ("path,label,labels", "has both 'label' and 'labels' columns"),
    ],
)
def test_header_problems_make_the_whole_file_unusable(tmp_path: Path, header: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(f"{header}\nx.jpg,a\n", encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        read_manifest(tmp_path / "m.csv")


def test_stratified_split_is_per_class_deterministic_and_order_free(labelled: Path) -> None:
    rows = read_manifest(labelled).rows
    train, val = stratified_rows(rows, 0.34, seed=3)
    again_train, again_val = stratified_rows(list(reversed(rows)), 0.34, seed=3)
    assert [r.line for r in val] == [r.line for r in again_val] and len(train) == len(again_train)
    assert Counter(r.labels[0] for r in val) == {"cat": 3, "dog": 1}


def test_a_labels_manifest_gives_multi_hot_batches_and_says_multilabel(tmp_path: Path) -> None:
    csv = write_multilabel_manifest(tmp_path, n=20)
    dm = ManifestDataModule(csv, batch_size=4, image_size=16, num_workers=0)
    info = dm.data_info()
    assert info.class_names == ["blue", "green", "red"]
    assert info.extra["multilabel"] is True and info.extra["train_images"] == 16
    assert sum(info.extra["class_counts"]) == sum(len(r.labels) for r in dm._split_rows()["train"])
    dm.setup("fit")
    images, truth = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    targets = truth["multi_hot"]
    assert images.shape == (4, 3, 16, 16) and str(images.dtype) == "torch.uint8"
    assert targets.shape == (4, 3) and str(targets.dtype) == "torch.float32"
    assert set(targets.flatten().tolist()) <= {0.0, 1.0} and (targets.sum(dim=1) >= 1).all()


def test_training_skips_bad_rows_and_reports_them_with_their_lines(labelled: Path) -> None:
    dm = ManifestDataModule(labelled, batch_size=4, image_size=16, num_workers=0)
    assert dm.data_info().extra["class_counts"] == [7, 3]  # 13 usable rows, split 0.2 per class
    assert [(b.path, b.line) for b in dm.bad_samples()] == [(str(labelled), 14), (str(labelled), 15)]


def test_error_mode_refuses_bad_rows_before_training_naming_each_line(labelled: Path) -> None:
    dm = ManifestDataModule(labelled, on_bad_image="error")
    with pytest.raises(UsageError) as err:
        dm.data_info()
    text = str(err.value)
    assert "data.csv:14: missing file 'files/gone.jpg'" in text and "data.csv:15: empty label" in text


def test_data_check_names_bad_rows_with_line_numbers_and_exits_1(run_cli, labelled: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_cli(["data", "check", str(labelled)])
    assert out.returncode == 1, out.stderr
    assert "data.csv:14: missing file 'files/gone.jpg'" in out.stdout
    assert "data.csv:15: empty label for 'files/cat_0.jpg'" in out.stdout
    assert "FAILED: 2 bad rows" in out.stdout
    as_json = json.loads(run_cli(["data", "check", str(labelled), "--json"]).stdout)
    assert as_json["dataset"] == "visionkit:csv" and as_json["splits"]["train"] == {"cat": 7, "dog": 3}
    assert [r["line"] for r in as_json["bad_rows"]] == [14, 15]


def test_balanced_sampler_draws_classes_evenly_and_deterministically_per_epoch() -> None:
    targets = [0] * 90 + [1] * 10
    weights = balanced_weights(targets)
    sampler = EpochSeededSampler(100, seed=1, weights=weights)
    epoch0 = [i for i, _ in sampler]
    assert epoch0 == [i for i, _ in EpochSeededSampler(100, seed=1, weights=weights)]
    sampler.set_epoch(1)
    assert [i for i, _ in sampler] != epoch0
    drawn = Counter(targets[i] for e in range(20) for i, _ in _epoch(sampler, e))
    assert 0.4 < drawn[1] / sum(drawn.values()) < 0.6  # 10% of the data, half of the draws


def test_balanced_sampler_shards_one_global_order_across_ranks() -> None:
    weights = balanced_weights([0] * 7 + [1] * 3)
    whole = [i for i, _ in EpochSeededSampler(10, seed=5, weights=weights)]
    ranks = [
        [i for i, _ in EpochSeededSampler(10, seed=5, num_replicas=2, rank=r, weights=weights)]
        for r in (0, 1)
    ]
    assert sorted(ranks[0] + ranks[1]) == sorted(whole) and ranks[0] == whole[0::2]


def test_multilabel_balance_weighs_a_sample_by_its_rarest_label() -> None:
    weights = balanced_weights([(1, 0), (1, 0), (1, 1), (0, 0)])
    assert weights == [1 / 3, 1 / 3, 1.0, 1.0]


def _epoch(sampler: EpochSeededSampler, epoch: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)
