"""The imagefolder dataset: folder layouts, splits, decoding, bad images, loaders, a real fit."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from visionkit_imagefolder.datamodule import ImageFolderDataModule, default_num_workers
from visionkit_imagefolder.dataset import decode_image_file
from visionkit_imagefolder.digits import DigitsDataModule
from visionkit_imagefolder.folders import natural_key

from visionkit_core.errors import UsageError

COLOURS = {"cat": (220, 30, 30), "dog": (30, 200, 40), "owl": (40, 40, 210)}


def write_image(
    path: Path, colour: tuple[int, int, int] = (128, 128, 128), size=(40, 30), mode="RGB"
) -> Path:
    """A real image file: a solid colour with a little noise (so JPEG has something to encode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = (np.array(colour, dtype=np.int16) + rng.integers(-8, 8, (size[1], size[0], 3))).clip(0, 255)
    Image.fromarray(arr.astype(np.uint8)).convert(mode).save(path)
    return path


def make_tree(root: Path, counts: dict[str, int], ext: str = "png") -> Path:
    for name, n in counts.items():
        for i in range(n):
            write_image(root / name / f"{i}.{ext}", COLOURS.get(name, (128, 128, 128)))
    return root


@pytest.fixture
def split_tree(tmp_path: Path) -> Path:
    """train/ with 6 cats and 4 dogs, val/ with 2 of each (PNG and JPEG mixed)."""
    make_tree(tmp_path / "train", {"cat": 6, "dog": 4})
    make_tree(tmp_path / "val", {"cat": 2, "dog": 2}, ext="jpg")
    return tmp_path


def batches(dm: ImageFolderDataModule, loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` of each batch: the truth Sample's ``label``."""
    return [(images, truth["label"]) for images, truth in (dm.on_before_batch_transfer(b, 0) for b in loader)]


# -- layouts and class names ---------------------------------------------------------------


def test_train_val_tree_gives_sorted_classes_and_counts(split_tree: Path) -> None:
    dm = ImageFolderDataModule(split_tree, batch_size=4, image_size=24, num_workers=0)
    assert dm.class_names() == ["cat", "dog"]
    assert dm.num_classes == 2
    dm.setup("fit")
    assert len(dm.train_dataset) == 10 and len(dm.val_dataset) == 4
    assert sorted(dm.train_dataset.targets) == [0] * 6 + [1] * 4


def test_class_names_only_reads_folder_names(split_tree: Path) -> None:
    dm = ImageFolderDataModule(split_tree)
    assert dm.class_names() == ["cat", "dog"]
    assert dm.train_dataset is None and dm.val_dataset is None


def test_batches_are_uint8_with_matching_labels(split_tree: Path) -> None:
    dm = ImageFolderDataModule(split_tree, batch_size=4, image_size=24, num_workers=0)
    dm.setup("fit")
    _, truth = dm.on_before_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert list(truth) == ["label"]  # a batched Sample
    for images, labels in batches(dm, dm.train_dataloader()) + batches(dm, dm.val_dataloader()):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 24, 24)
        assert labels.dtype == torch.int64
        # cats are red, dogs green: the dominant channel gives the label back
        dominant = images.float().mean(dim=(2, 3)).argmax(dim=1)
        assert dominant.tolist() == [0 if y == 0 else 1 for y in labels.tolist()]


def test_val_transform_is_deterministic(split_tree: Path) -> None:
    dm = ImageFolderDataModule(split_tree, image_size=24, num_workers=0)
    dm.setup("validate")
    first, label, skipped = dm.val_dataset[0]
    again, _, _ = dm.val_dataset[0]
    assert torch.equal(first, again) and first.shape == (3, 24, 24)
    assert (label, skipped) == ({"label": torch.tensor(0)}, ())
    assert dm.train_dataset is None


def test_single_folder_is_split_per_class(tmp_path: Path) -> None:
    make_tree(tmp_path, {"cat": 10, "dog": 20})
    dm = ImageFolderDataModule(tmp_path, val_split=0.2, seed=3, num_workers=0)
    dm.setup("fit")
    train, val = dm.train_dataset.samples, dm.val_dataset.samples
    assert [lab for _, lab in val].count(0) == 2 and [lab for _, lab in val].count(1) == 4
    assert [lab for _, lab in train].count(0) == 8 and [lab for _, lab in train].count(1) == 16
    assert not {p for p, _ in train} & {p for p, _ in val}


def test_split_is_deterministic_per_seed(tmp_path: Path) -> None:
    make_tree(tmp_path, {"cat": 10, "dog": 20})

    def val_paths(seed: int) -> list[str]:
        dm = ImageFolderDataModule(tmp_path, val_split=0.2, seed=seed)
        dm.setup("fit")
        return [p for p, _ in dm.val_dataset.samples]

    assert val_paths(7) == val_paths(7)
    assert val_paths(7) != val_paths(8)


def test_hidden_folders_are_not_classes_and_numbers_sort_naturally(tmp_path: Path) -> None:
    make_tree(tmp_path, {"10": 2, "2": 2, "1": 2, ".cache": 2, "__MACOSX": 1})
    write_image(tmp_path / "2" / ".hidden.png")
    dm = ImageFolderDataModule(tmp_path, val_split=0.5)
    assert dm.class_names() == ["1", "2", "10"]
    dm.setup("fit")
    assert len(dm.train_dataset) + len(dm.val_dataset) == 6
    assert natural_key("img9") < natural_key("img10")


def test_extensions_are_case_insensitive_and_other_files_ignored(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "x.JPG")
    write_image(tmp_path / "a" / "nested" / "y.Png")
    write_image(tmp_path / "b" / "z.jpeg")
    write_image(tmp_path / "b" / "w.webp")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(tmp_path, val_split=0.5)
    dm.setup("fit")
    names = sorted(Path(p).name for p, _ in dm.train_dataset.samples + dm.val_dataset.samples)
    assert names == ["w.webp", "x.JPG", "y.Png", "z.jpeg"]


def test_test_stage_uses_test_folder(split_tree: Path) -> None:
    make_tree(split_tree / "test", {"dog": 3})
    dm = ImageFolderDataModule(split_tree, batch_size=2, image_size=16)
    dm.setup("test")
    assert [lab for _, lab in dm.test_dataset.samples] == [1, 1, 1]
    assert [len(y) for _, y in batches(dm, dm.test_dataloader())] == [2, 1]


# -- errors that tell the user what to do ------------------------------------------------------


def test_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope.*does not exist"):
        ImageFolderDataModule(tmp_path / "nope").class_names()


def test_file_instead_of_folder_is_a_usage_error(tmp_path: Path) -> None:
    path = write_image(tmp_path / "one.png")
    with pytest.raises(UsageError, match=r"one\.png.*is a file, not a folder"):
        ImageFolderDataModule(path).class_names()


def test_folder_without_class_folders_is_a_usage_error(tmp_path: Path) -> None:
    write_image(tmp_path / "loose.png")
    with pytest.raises(UsageError, match=r"has no class folders \(it holds 1 images directly"):
        ImageFolderDataModule(tmp_path).class_names()


def test_no_root_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="pass --data PATH"):
        ImageFolderDataModule(None).class_names()


def test_mismatched_train_and_val_classes_are_named(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", {"cat": 1, "dog": 1, "owl": 1})
    make_tree(tmp_path / "val", {"cat": 1, "dog": 1, "emu": 1})
    with pytest.raises(UsageError, match=r"only in train: owl; only in val: emu"):
        ImageFolderDataModule(tmp_path).class_names()


def test_class_folder_without_images_is_named(tmp_path: Path) -> None:
    make_tree(tmp_path, {"cat": 3})
    (tmp_path / "dog").mkdir()
    dm = ImageFolderDataModule(tmp_path)
    with pytest.raises(UsageError, match=r"class folders without images .*: dog"):
        dm.setup("fit")


def test_test_stage_without_test_folder_is_a_usage_error(split_tree: Path) -> None:
    with pytest.raises(UsageError, match=r"has no test/ folder"):
        ImageFolderDataModule(split_tree).setup("test")


def test_bad_option_values_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"crop_pct must be in \(0, 1\]"):
        ImageFolderDataModule(tmp_path, crop_pct=1.5)
    with pytest.raises(UsageError, match="on_bad_image must be 'skip' or 'error'"):
        ImageFolderDataModule(tmp_path, on_bad_image="ignore")


# -- decoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("grey.jpg", "L"),
        ("rgba.png", "RGBA"),
        ("palette.png", "P"),
        ("cmyk.jpg", "CMYK"),
        ("grey.png", "L"),
        ("rgb.bmp", "RGB"),
        ("rgb.tiff", "RGB"),
        ("rgb.gif", "RGB"),
        ("rgb.webp", "RGB"),
    ],
)
def test_image_modes_decode_to_rgb_uint8(tmp_path: Path, name: str, mode: str) -> None:
    path = write_image(tmp_path / name, (200, 100, 50), size=(20, 12), mode=mode)
    img = decode_image_file(path)
    assert img.dtype == torch.uint8 and img.shape == (3, 12, 20)
    reference = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    assert (img.int() - reference.int()).abs().max() <= 2


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 5), 32896, dtype=np.uint16)).save(path)  # 32896 = 128 * 257
    img = decode_image_file(path)
    assert img.dtype == torch.uint8 and img.shape == (3, 4, 5)
    assert img.unique().tolist() == [128]


def test_torchvision_and_pil_decode_the_same_jpeg_alike(tmp_path: Path) -> None:
    x = np.linspace(0, 1, 96)
    photo = (np.stack([np.outer(x, x), np.outer(1 - x, x), np.outer(x, 1 - x)], -1) * 255).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(path, quality=80)
    ours = decode_image_file(path)
    pil = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    # both bundle libjpeg-turbo; measured 0 here (torchvision 0.29, Pillow 13); allow +-2 across builds
    assert (ours.int() - pil.int()).abs().max().item() <= 2


# -- unreadable files --------------------------------------------------------------------------


@pytest.fixture
def tree_with_bad_file(split_tree: Path) -> tuple[Path, Path]:
    bad = split_tree / "val" / "cat" / "0_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff this is not really a JPEG")
    return split_tree, bad


def test_bad_image_is_skipped_warned_and_counted_once(tree_with_bad_file: tuple[Path, Path]) -> None:
    root, bad = tree_with_bad_file
    dm = ImageFolderDataModule(root, batch_size=5, image_size=16, num_workers=0)
    dm.setup("fit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two epochs: the file fails twice, is reported once
            sizes = [len(y) for _, y in batches(dm, dm.val_dataloader())]
    assert sizes == [5]  # the bad sample was replaced, not dropped
    assert dm.skipped_images == {str(bad)}
    messages = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(messages) == 1 and str(bad) in messages[0]


def test_batch_of_only_bad_images_is_filled_from_readable_ones(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", {"cat": 2, "dog": 2})
    make_tree(tmp_path / "val", {"cat": 1, "dog": 1})
    for i in range(3):
        (tmp_path / "val" / "cat" / f"0{i}.png").write_bytes(b"garbage")
    dm = ImageFolderDataModule(tmp_path, batch_size=3, image_size=16, num_workers=0)
    dm.setup("validate")
    with pytest.warns(UserWarning, match="skipped unreadable image"):
        (images, _), (_, rest) = batches(dm, dm.val_dataloader())
    assert images.shape == (3, 3, 16, 16) and len(rest) == 2
    assert len(dm.skipped_images) == 3


def test_a_split_of_only_unreadable_files_is_a_usage_error(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", {"cat": 2, "dog": 2})
    for name in ("cat", "dog"):
        (tmp_path / "val" / name).mkdir(parents=True)
        (tmp_path / "val" / name / "x.png").write_bytes(b"garbage")
    dm = ImageFolderDataModule(tmp_path, image_size=16)
    dm.setup("validate")
    with pytest.raises(UsageError, match=r"none of the 2 images could be read, e\.g\. .*x\.png"):
        dm.val_dataset[0]


def test_error_mode_raises_naming_the_file(tree_with_bad_file: tuple[Path, Path]) -> None:
    root, bad = tree_with_bad_file
    dm = ImageFolderDataModule(root, image_size=16, on_bad_image="error")
    dm.setup("validate")
    index = [p for p, _ in dm.val_dataset.samples].index(str(bad))
    with pytest.raises(UsageError, match=r"cannot read image .*0_broken\.jpg"):
        dm.val_dataset[index]


def test_error_mode_in_a_worker_gives_the_one_line_message(tree_with_bad_file: tuple[Path, Path]) -> None:
    root, bad = tree_with_bad_file
    dm = ImageFolderDataModule(root, image_size=16, num_workers=1, on_bad_image="error")
    dm.setup("validate")
    loader = dm.val_dataloader()
    try:
        with pytest.raises(UsageError) as caught:
            list(loader)
    finally:
        loader._iterator._shutdown_workers()
    assert str(caught.value).startswith(f"cannot read image {str(bad)!r}")
    assert "\n" not in str(caught.value)


# -- loaders -----------------------------------------------------------------------------------


def test_train_loader_drops_last_only_when_there_is_more_than_one_batch(split_tree: Path) -> None:
    dm = ImageFolderDataModule(split_tree, batch_size=4, image_size=16, num_workers=0)
    dm.setup("fit")
    assert [len(y) for _, y in batches(dm, dm.train_dataloader())] == [4, 4]  # 10 samples
    tiny = ImageFolderDataModule(split_tree, batch_size=64, image_size=16, num_workers=0)
    tiny.setup("fit")
    assert [len(y) for _, y in batches(tiny, tiny.train_dataloader())] == [10]


def test_train_order_is_reproducible_from_the_seed(split_tree: Path) -> None:
    def order(seed: int) -> list[int]:
        dm = ImageFolderDataModule(split_tree, batch_size=10, image_size=16, seed=seed, num_workers=0)
        dm.setup("fit")
        return [lab for _, y in batches(dm, dm.train_dataloader()) for lab in y.tolist()]

    assert order(1) == order(1)
    assert {tuple(order(s)) for s in range(1, 6)} != {tuple(order(1))}


def test_worker_processes_load_the_same_samples(split_tree: Path) -> None:
    dm = ImageFolderDataModule(split_tree, batch_size=2, image_size=16, num_workers=2)
    dm.setup("fit")
    loader = dm.val_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    try:
        assert [y.tolist() for _, y in batches(dm, loader)] == [[0, 0], [1, 1]]
    finally:
        # as Lightning does at teardown: a persistent iterator left to the cyclic GC can take
        # 5 s per worker to shut down (its queues are finalised before it)
        loader._iterator._shutdown_workers()


def test_defaults_pin_memory_only_with_cuda_and_pick_workers(split_tree: Path) -> None:
    dm = ImageFolderDataModule(split_tree)
    assert dm.pin_memory is torch.cuda.is_available()
    assert dm.image_size == 224
    assert default_num_workers(5000, on_gpu=False, cpu_count=2, torch_threads=2) == 0
    assert default_num_workers(5000, on_gpu=False, cpu_count=16, torch_threads=8) == 4
    assert default_num_workers(5000, on_gpu=True, cpu_count=16) == 8
    assert default_num_workers(5000, on_gpu=True, cpu_count=16, processes=4) == 3
    assert default_num_workers(100, on_gpu=True, cpu_count=16) == 0


# -- plugin and a real Lightning run --------------------------------------------------------------


def test_plugin_registers_both_datasets() -> None:
    from visionkit_imagefolder import plugin

    from visionkit_core.plugin.registry import Origin, Registrar, Registry

    registry = Registry()
    registrar = Registrar(registry, "dataset", Origin("imagefolder", "visionkit", "0"), "visionkit")
    plugin.visionkit_register_datasets(registrar)
    assert registrar.commit() == []
    assert registry.resolve("dataset", "digits").load() is DigitsDataModule
    assert registry.resolve("dataset", "visionkit:imagefolder").load() is ImageFolderDataModule


def test_plugin_module_imports_nothing_heavy() -> None:
    heavy = "{'torch', 'torchvision', 'lightning', 'PIL', 'sklearn'}"
    code = f"import sys, visionkit_imagefolder.plugin; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class TinyClassifier(L.LightningModule):
    """Normalises uint8 batches itself, as the real task does on the device."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))
        self.seen: list[tuple[torch.dtype, int]] = []

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch[0], batch[1]["label"]
        self.seen.append((images.dtype, len(labels)))
        return torch.nn.functional.cross_entropy(self.net(images.float() / 255.0 - 0.5), labels)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._loss(batch)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_runs_and_records_skipped_images(tree_with_bad_file: tuple[Path, Path]) -> None:
    root, bad = tree_with_bad_file
    dm = ImageFolderDataModule(root, batch_size=4, image_size=16, num_workers=0)
    model = TinyClassifier(dm.num_classes)
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.warns(UserWarning, match="0_broken.jpg"):
        trainer.fit(model, datamodule=dm)
    assert model.seen == [(torch.uint8, 4), (torch.uint8, 4)]
    assert dm.skipped_images == {str(bad)}


def test_checkpoint_datamodule_hparams_load_with_weights_only(split_tree: Path, tmp_path: Path) -> None:
    dm = ImageFolderDataModule(split_tree, batch_size=4, image_size=16, num_workers=0)
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyClassifier(dm.num_classes), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    hparams = torch.load(tmp_path / "run.ckpt", weights_only=True)["datamodule_hyper_parameters"]
    assert hparams["root"] == str(split_tree) and hparams["image_size"] == 16
