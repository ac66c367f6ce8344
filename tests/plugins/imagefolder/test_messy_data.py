"""Bad and messy data on the training path: odd image modes, unreadable files, odd folder trees."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import cli_server
import numpy as np
import pytest
import torch
from bad_images import write_bomb_png, write_truncated_jpeg
from conftest import make_image_tree
from PIL import Image, ImageFile
from visionkit_imagefolder.datamodule import ImageFolderDataModule
from visionkit_imagefolder.dataset import decode_image_file

from visionkit_core.errors import UsageError


def pil_reference(path: Path) -> torch.Tensor:
    """What Pillow's own ``convert("RGB")`` makes of a file, as a (3, H, W) uint8 tensor."""
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)


def write_png_rgb16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): IHDR bit depth 16, colour type 2."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(png + chunk(b"IEND", b""))
    return path


# -- odd but valid images decode like Pillow's conversion ------------------------------------------

RGB = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)


def _palette_with_transparency(path: Path) -> None:
    im = Image.fromarray(RGB).quantize(16)
    im.save(path, transparency=3)


ODD_IMAGES = {
    "cmyk.jpg": lambda p: Image.fromarray(RGB).convert("CMYK").save(p, quality=95),
    "grey.png": lambda p: Image.fromarray(RGB).convert("L").save(p),
    "grey_alpha.png": lambda p: Image.fromarray(RGB).convert("LA").save(p),
    "rgba.png": lambda p: Image.fromarray(np.dstack([RGB, RGB[..., 1]])).save(p),
    "palette_transparent.png": _palette_with_transparency,
    "one_bit.png": lambda p: Image.fromarray(RGB[..., 0] > 127).save(p),
}


@pytest.mark.parametrize("name", sorted(ODD_IMAGES))
def test_odd_image_modes_decode_like_pillows_rgb_conversion(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    ODD_IMAGES[name](path)
    img = decode_image_file(path)
    assert img.dtype == torch.uint8 and img.shape == (3, 12, 20)
    assert (img.int() - pil_reference(path).int()).abs().max().item() <= 2  # measured 0 for each


def test_sixteen_bit_grey_png_is_scaled_to_eight_bits_not_clipped(tmp_path: Path) -> None:
    deep = np.linspace(0, 65535, 12 * 20).round().astype(np.uint16).reshape(12, 20)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    assert Image.open(path).mode == "I;16"
    img = decode_image_file(path)
    expected = np.round(deep.astype(np.float64) * 255 / 65535)
    assert img.dtype == torch.uint8 and img.shape == (3, 12, 20)
    assert (img[0].numpy() == img[2].numpy()).all()
    assert np.abs(img[0].numpy().astype(np.float64) - expected).max() <= 1  # measured 0
    assert img[0, 0, 0] == 0 and img[0, -1, -1] == 255  # 0 -> 0, 65535 -> 255
    assert len(img.unique()) > 200  # a gradient, not everything clipped to 255


def test_sixteen_bit_rgb_png_keeps_its_colours(tmp_path: Path) -> None:
    deep = RGB.astype(np.uint16) * 256 + 200  # up to 65480: a low byte that clipping would expose
    path = write_png_rgb16(tmp_path / "deep_rgb.png", deep)
    img = decode_image_file(path).permute(1, 2, 0).numpy().astype(np.float64)
    assert np.abs(img - np.round(deep.astype(np.float64) * 255 / 65535)).max() <= 1


# -- unreadable files ---------------------------------------------------------------------------


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """One file of each kind of damage, next to a good JPEG."""
    folder = tmp_path / "bad"
    folder.mkdir()
    good = folder / "good.jpg"
    Image.fromarray(np.tile(RGB, (4, 4, 1))).save(good, quality=90)
    short_png = folder / "short_idat.png"  # a complete PNG whose image data is far too short
    write_bomb_png(short_png, 100, 100)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image\n")
    return {
        "empty": folder / "empty.jpg",
        "text": folder / "text.jpg",
        "truncated": write_truncated_jpeg(folder / "truncated.jpg", good),
        "bomb": write_bomb_png(folder / "bomb.png"),
        "short_png": short_png,
    }


def test_unreadable_files_raise_catchable_errors_and_never_crash(bad_files: dict[str, Path]) -> None:
    # in a child process: torchvision's PNG decoder used to kill the process on short_png (SIGSEGV)
    code = (
        "import sys\n"
        "from visionkit_core.kit.data import decode_image as decode_image_file\n"
        "from visionkit_core.kit.skips import DECODE_ERRORS as _DECODE_ERRORS\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        decode_image_file(path)\n"
        "    except _DECODE_ERRORS as err:\n"
        "        print(type(err).__name__)\n"
    )
    names = list(bad_files)
    paths = [str(bad_files[n]) for n in names]
    result = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert dict(zip(names, result.stdout.split(), strict=True)) == {
        "empty": "UnidentifiedImageError",
        "text": "UnidentifiedImageError",
        "truncated": "OSError",
        "bomb": "DecompressionBombError",
        "short_png": "OSError",
    }


@pytest.fixture
def tree_with_bad_files(tmp_path: Path, bad_files: dict[str, Path]) -> Path:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=3, size=32)
    for i, (kind, path) in enumerate(sorted(bad_files.items())):
        split = "train" if i % 2 == 0 else "val"
        os.replace(path, root / split / "dog" / f"{kind}{path.suffix}")
    return root


def test_error_mode_lists_every_bad_file_before_training(tree_with_bad_files: Path) -> None:
    dm = ImageFolderDataModule(tree_with_bad_files, image_size=16, on_bad_image="error")
    with pytest.raises(UsageError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    assert message.startswith(
        f"5 of 17 training and validation images in {str(tree_with_bad_files)!r} cannot be read"
    )
    lines = message.splitlines()
    assert sorted(line.split(":")[0].strip() for line in lines[1:6]) == [
        os.path.join("train", "dog", "bomb.png"),
        os.path.join("train", "dog", "short_png.png"),
        os.path.join("train", "dog", "truncated.jpg"),
        os.path.join("val", "dog", "empty.jpg"),
        os.path.join("val", "dog", "text.jpg"),
    ]
    assert "empty.jpg: empty file (0 bytes)" in message
    assert "bomb.png: decompression bomb" in message
    assert "truncated.jpg: truncated" in message
    assert lines[-1].startswith("Fix or remove them, or pass --on-bad-image skip")
    assert dm.train_dataset is None  # nothing was built


def test_error_mode_lists_twenty_bad_files_then_counts_the_rest(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24)
    for i in range(23):
        (root / "train" / "cat" / f"zero_{i:02d}.png").write_bytes(b"")
    dm = ImageFolderDataModule(root, image_size=16, on_bad_image="error")
    with pytest.raises(UsageError) as caught:
        dm.setup("fit")
    lines = str(caught.value).splitlines()
    assert sum("empty file (0 bytes)" in line for line in lines) == 20
    assert "  ... and 3 more" in lines


def test_skip_mode_keeps_training_and_leaves_pillow_settings_alone(tree_with_bad_files: Path) -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    dm = ImageFolderDataModule(tree_with_bad_files, batch_size=4, image_size=16, num_workers=0)
    dm.setup("fit")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        sizes = [len(dm.on_before_batch_transfer(b, 0)[0]) for b in dm.val_dataloader()]
    assert sizes == [4, 4]  # 8 val files, 2 unreadable ones replaced by readable samples
    assert {Path(p).name for p in dm.skipped_images} == {"empty.jpg", "text.jpg"}
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before == (89478485, False)


# -- odd folder trees ---------------------------------------------------------------------------


def test_hidden_folders_are_neither_classes_nor_samples(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24)
    make_image_tree(root, [".ipynb_checkpoints"], per_class=2, size=24)
    make_image_tree(root / "train" / "cat", [".ipynb_checkpoints"], per_class=2, size=24, splits=("",))
    dm = ImageFolderDataModule(root, image_size=16)
    assert dm.class_names() == ["cat", "dog"]
    dm.setup("fit")
    assert len(dm.train_dataset) == 4 and len(dm.val_dataset) == 4


def test_symlink_loops_add_no_duplicates(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24)
    cat = root / "train" / "cat"
    (cat / "loop").symlink_to(cat, target_is_directory=True)  # cat/loop/loop/... forever
    (cat / "up").symlink_to(root / "train", target_is_directory=True)  # would reach dog's images
    outside = make_image_tree(tmp_path / "more", ["lion"], per_class=1, size=24, splits=("",)) / "lion"
    (cat / "lions").symlink_to(outside, target_is_directory=True)  # followed: not another class
    (cat / "lions_again").symlink_to(outside, target_is_directory=True)  # ... but only once
    dm = ImageFolderDataModule(root, image_size=16)
    dm.setup("fit")
    names = sorted((Path(p).name, label) for p, label in dm.train_dataset.samples)
    assert names == [
        ("cat_0.jpg", 0),
        ("cat_1.jpg", 0),
        ("dog_0.jpg", 1),
        ("dog_1.jpg", 1),
        ("lion_0.jpg", 0),
    ]


def test_a_class_folder_linked_to_another_class_is_refused(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24)
    (root / "train" / "kitty").symlink_to(root / "train" / "cat", target_is_directory=True)
    with pytest.raises(UsageError, match=r"class folders 'cat' and 'kitty' .* hold the same images"):
        ImageFolderDataModule(root).class_names()


def test_a_test_split_with_unknown_classes_is_refused_before_training(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24)
    make_image_tree(root, ["cat", "fox"], per_class=1, size=24, splits=("test",))
    with pytest.raises(UsageError, match=r"test/ has class folders that train/ lacks .*: fox;"):
        ImageFolderDataModule(root).class_names()


# -- through the CLI ------------------------------------------------------------------------------


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return cli_server.visionkit("train", "--epochs", "1", "--image-size", "16", *args, cwd=cwd)


@pytest.fixture(scope="module")
def numeric_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on classes "2", "10", "1" with one truncated JPEG (skipped)."""
    tmp = tmp_path_factory.mktemp("numeric")
    root = make_image_tree(tmp / "data", ["2", "10", "1"], per_class=4, size=24)
    write_truncated_jpeg(root / "train" / "10" / "broken.jpg", root / "train" / "10" / "10_0.jpg")
    result = _train(
        ["--data", str(root), "--backbone", "timm:resnet10t", "--batch-size", "4", "--run-dir", "run"], tmp
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "broken.jpg" in result.stderr  # the skip warning names the file
    return tmp / "run"


@pytest.mark.slow
def test_numeric_classes_sort_naturally_and_the_checkpoint_keeps_the_mapping(numeric_run: Path) -> None:
    ckpt = torch.load(numeric_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["visionkit"]["class_names"] == ["1", "2", "10"]


@pytest.mark.slow
def test_skipped_images_are_counted_in_the_summary(numeric_run: Path) -> None:
    summary = json.loads((numeric_run / "summary.json").read_text())
    assert summary["skipped_images"] == 1


@pytest.mark.slow
def test_train_in_error_mode_stops_before_training_listing_bad_files(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=3, size=24)
    (root / "train" / "dog" / "empty.jpg").write_bytes(b"")
    (root / "val" / "cat" / "notes.png").write_text("hello")
    result = _train(["--data", str(root), "--on-bad-image", "error", "--run-dir", "run"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"{os.path.join('train', 'dog', 'empty.jpg')}: empty file (0 bytes)" in result.stderr
    assert f"{os.path.join('val', 'cat', 'notes.png')}: not an image" in result.stderr
    assert not list((tmp_path / "run").rglob("*.ckpt"))


@pytest.mark.slow
def test_train_refuses_splits_with_different_classes(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24)
    make_image_tree(root, ["fox"], per_class=2, size=24, splits=("val",))
    result = _train(["--data", str(root), "--run-dir", "run"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: train and val class folders differ in {str(root)!r}: only in train: (none); "
        "only in val: fox. Give both the same class folders"
    ]
    assert not list(tmp_path.rglob("*.ckpt"))
