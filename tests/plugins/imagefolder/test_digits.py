"""The digits dataset: scikit-learn's digits materialised once, atomically, as an ImageFolder tree."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from visionkit_imagefolder.digits import DIGITS_DIRNAME, DigitsDataModule, materialise_digits

from visionkit_core.kit.demo import MARKER


@pytest.fixture(scope="module")
def digits_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One materialised tree shared by the tests that only read it."""
    return materialise_digits(tmp_path_factory.mktemp("cache") / DIGITS_DIRNAME)


def pngs(tree: Path) -> list[Path]:
    return sorted(tree.glob("*/*/*.png"))


def test_prepare_data_writes_1797_pngs_into_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path))
    dm = DigitsDataModule()
    dm.prepare_data()
    tree = tmp_path / DIGITS_DIRNAME
    assert dm.root == tree and (tree / MARKER).is_file()
    assert len(pngs(tree)) == 1797
    assert len(list(tree.glob("train/*/*.png"))) == 1437 and len(list(tree.glob("val/*/*.png"))) == 360
    assert sorted(p.name for p in tmp_path.iterdir()) == [DIGITS_DIRNAME]  # no temporary folders left


def test_second_prepare_data_reuses_the_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path))
    DigitsDataModule().prepare_data()
    tree = tmp_path / DIGITS_DIRNAME
    before = {p: p.stat().st_mtime_ns for p in [tree, tree / MARKER, *pngs(tree)[:20]]}
    DigitsDataModule().prepare_data()
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_class_names_need_no_files(tmp_path: Path) -> None:
    dm = DigitsDataModule(cache_dir=str(tmp_path / "cache"))
    assert dm.class_names() == [str(d) for d in range(10)]
    assert dm.num_classes == 10 and dm.image_size == 32
    assert not (tmp_path / "cache").exists()


def test_pngs_are_the_sklearn_digits_scaled_to_0_255(digits_tree: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    first = np.array(Image.open(digits_tree / "train" / str(digits.target[0]) / "0000.png"))
    assert Image.open(digits_tree / "train" / str(digits.target[0]) / "0000.png").mode == "L"
    assert first.shape == (8, 8) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, np.rint(digits.images[0] * 255 / 16).astype(np.uint8))


def test_split_is_stratified_and_independent_of_the_run_seed(digits_tree: Path) -> None:
    val_counts = [len(list((digits_tree / "val" / str(d)).glob("*.png"))) for d in range(10)]
    assert sum(val_counts) == 360 and min(val_counts) >= 35 and max(val_counts) <= 37

    def val_files(seed: int) -> list[str]:
        dm = DigitsDataModule(seed=seed, cache_dir=str(digits_tree.parent))
        dm.setup("validate")
        return [p for p, _ in dm.val_dataset.samples]

    assert val_files(1) == val_files(2)


def test_a_real_batch_loads(digits_tree: Path) -> None:
    dm = DigitsDataModule(batch_size=16, seed=0, num_workers=0, cache_dir=str(digits_tree.parent))
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (1437, 360)
    images, truth = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    labels = truth["label"]
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= set(range(10))
    assert torch.equal(images[:, 0], images[:, 1])  # grayscale decoded to three equal channels
    assert images.max() > 200 and images.min() == 0
    val_images, _ = dm.on_before_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert val_images.shape == (16, 3, 32, 32)


def test_image_size_can_be_overridden(digits_tree: Path) -> None:
    dm = DigitsDataModule(image_size=48, cache_dir=str(digits_tree.parent))
    dm.setup("validate")
    assert dm.image_size == 48 and dm.val_dataset[0][0].shape == (3, 48, 48)


def test_setup_materialises_when_prepare_data_was_not_called(tmp_path: Path) -> None:
    dm = DigitsDataModule(cache_dir=str(tmp_path))
    dm.setup("validate")
    assert len(dm.val_dataset) == 360 and (tmp_path / DIGITS_DIRNAME / MARKER).is_file()


def test_an_incomplete_tree_is_replaced(tmp_path: Path) -> None:
    tree = tmp_path / DIGITS_DIRNAME
    (tree / "train" / "3").mkdir(parents=True)  # what a killed non-atomic writer would leave
    (tree / "train" / "3" / "0001.png").write_bytes(b"half a file")
    materialise_digits(tree)
    assert (tree / MARKER).is_file() and len(pngs(tree)) == 1797
    assert sorted(p.name for p in tmp_path.iterdir()) == [DIGITS_DIRNAME]


def test_concurrent_writers_leave_one_complete_tree(tmp_path: Path) -> None:
    tree = tmp_path / DIGITS_DIRNAME
    errors: list[BaseException] = []

    def write() -> None:
        try:
            materialise_digits(tree)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (tree / MARKER).is_file() and len(pngs(tree)) == 1797
    assert sorted(p.name for p in tmp_path.iterdir()) == [DIGITS_DIRNAME]
