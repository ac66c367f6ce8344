"""``visionkit data check``: counts, split consistency, every bad file with its reason; read-only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bad_images import write_bomb_png, write_truncated_jpeg
from conftest import make_image_tree
from PIL import Image, ImageFile
from visionkit_imagefolder import check


def write_lossy_images(folder: Path) -> dict[str, str]:
    """Readable images that lose something on the way to 8-bit RGB; file name -> expected warning."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rng.integers(0, 65536, (16, 16)).astype(np.uint16)).save(folder / "deep.png")
    Image.fromarray(np.dstack([rgb, rgb[..., 0]])).save(folder / "alpha.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "print.jpg")
    return {"deep.png": "16-bit", "alpha.png": "alpha channel dropped", "print.jpg": "CMYK converted"}


@pytest.fixture
def messy_tree(tmp_path: Path) -> Path:
    """train/val with cat and dog, plus one file of each kind of damage in train/cat."""
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=3, size=32)
    cat = root / "train" / "cat"
    (cat / "empty.jpg").write_bytes(b"")
    (cat / "notes.jpg").write_text("these are my notes, not a picture\n")
    write_truncated_jpeg(cat / "half.jpg", cat / "cat_0.jpg")
    write_bomb_png(cat / "bomb.png")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int, bool]]:
    """Every path under ``root`` with its size, mtime (ns) and whether it is a folder."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (
                st.st_size,
                st.st_mtime_ns,
                name in dirnames,
            )
    return out


def test_clean_tree_prints_counts_per_split_and_exits_0(run_cli, tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["2", "10", "1"], per_class=2, size=24)
    (root / "train" / "10" / "extra.jpg").write_bytes((root / "train" / "10" / "10_0.jpg").read_bytes())
    result = run_cli(["data", "check", str(root)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    table = [line.split() for line in lines[1:6]]
    assert table == [
        ["class", "train", "val"],
        ["1", "2", "2"],
        ["2", "2", "2"],
        ["10", "3", "2"],
        ["total", "7", "6"],
    ]
    assert "class folders: consistent" in lines
    assert "unreadable files: 0" in lines
    assert lines[-1] == "OK"


def test_every_bad_file_is_named_with_its_reason_and_exits_1(run_cli, messy_tree: Path) -> None:
    result = run_cli(["data", "check", str(messy_tree)])
    assert result.returncode == 1
    out = result.stdout
    assert "unreadable files: 4" in out
    assert f"{os.path.join('train', 'cat', 'empty.jpg')}: empty file (0 bytes)" in out
    assert f"{os.path.join('train', 'cat', 'notes.jpg')}: not an image" in out
    assert f"{os.path.join('train', 'cat', 'half.jpg')}: truncated" in out
    assert f"{os.path.join('train', 'cat', 'bomb.png')}: decompression bomb" in out
    assert "400000000 pixels" in out
    assert out.splitlines()[-1] == "FAILED: 4 unreadable files"


def test_check_never_changes_the_folder(run_cli, messy_tree: Path) -> None:
    write_lossy_images(messy_tree / "val" / "dog")
    before = snapshot(messy_tree)
    for args in ([], ["--json"], ["--workers", "2"]):
        assert run_cli(["data", "check", str(messy_tree), *args]).returncode == 1
    assert snapshot(messy_tree) == before


def test_json_output_has_counts_reasons_and_lossy_conversions(run_cli, messy_tree: Path) -> None:
    expected = write_lossy_images(messy_tree / "val" / "dog")
    result = run_cli(["data", "check", str(messy_tree), "--json"])
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["classes"] == ["cat", "dog"]
    assert doc["splits"] == {"train": {"cat": 7, "dog": 3}, "val": {"cat": 3, "dog": 6}}
    reasons = {Path(b["path"]).name: b["reason"].split(":")[0] for b in doc["bad_files"]}
    assert reasons == {
        "empty.jpg": "empty file (0 bytes)",
        "notes.jpg": "not an image (Pillow cannot identify the file format)",
        "half.jpg": "truncated",
        "bomb.png": "decompression bomb",
    }
    warnings = {Path(w["path"]).name: w["warning"] for w in doc["warnings"]}
    assert set(warnings) == set(expected)
    for name, text in expected.items():
        assert text in warnings[name]


def test_classes_that_differ_between_splits_are_named_and_exit_1(run_cli, tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24)
    make_image_tree(root, ["fox"], per_class=2, size=24, splits=("val",))
    make_image_tree(root, ["cat"], per_class=1, size=24, splits=("test",))
    result = run_cli(["data", "check", str(root)])
    assert result.returncode == 1
    assert "error: val: classes not in train: fox" in result.stdout
    assert "warning: test: no folder for classes dog" in result.stdout
    assert result.stdout.splitlines()[-1] == "FAILED: 1 class folder problem"


def test_a_test_split_with_fewer_classes_only_warns(run_cli, tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24)
    make_image_tree(root, ["cat"], per_class=1, size=24, splits=("test",))
    result = run_cli(["data", "check", str(root), "--json"])
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert doc["class_problems"] == [] and doc["splits"]["test"] == {"cat": 1}
    assert doc["class_warnings"] == [
        "test: no folder for classes dog (allowed: test reports the classes present)"
    ]


def test_missing_folder_is_a_one_line_usage_error(run_cli, tmp_path: Path) -> None:
    result = run_cli(["data", "check", str(tmp_path / "nope")])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {str(tmp_path / 'nope')!r} does not exist; "
        "give a data folder (see `visionkit datasets list`)"
    ]
    assert "Traceback" not in result.stderr


def test_single_folder_of_classes_skips_hidden_folders(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24, splits=("",))
    make_image_tree(root, [".ipynb_checkpoints"], per_class=2, size=24, splits=("",))
    make_image_tree(root / "cat", [".ipynb_checkpoints"], per_class=2, size=24, splits=("",))
    report = check.check_tree(root, workers=1)
    assert report.ok
    assert [(s.name, {c: len(f) for c, f in s.files.items()}) for s in report.splits] == [
        ("all", {"cat": 2, "dog": 2})
    ]


def test_symlinked_class_folders_are_a_class_problem(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=2, size=24)
    (root / "train" / "kitty").symlink_to(root / "train" / "cat", target_is_directory=True)
    (root / "val" / "kitty").mkdir()
    report = check.check_tree(root, workers=1)
    assert report.problems == [
        "train: class folders 'cat' and 'kitty' hold the same images (one is a symlink into the other); "
        "keep one folder per class"
    ]


def test_worker_processes_find_what_one_process_finds(messy_tree: Path) -> None:
    write_lossy_images(messy_tree / "val" / "dog")
    paths = sorted(str(p) for p in messy_tree.rglob("*.*"))
    one = check.inspect_files(paths, workers=1)
    two = check.inspect_files(paths, workers=2, parallel_min_files=0)
    assert [f.path for f in two] == paths
    assert two == one
    assert sum(f.error is not None for f in two) == 4


def test_few_files_are_checked_without_worker_processes() -> None:
    assert check.effective_workers(10, workers=8) == 1
    assert check.effective_workers(check.PARALLEL_MIN_FILES, workers=8) == 8
    assert check.effective_workers(500, workers=None) == check.available_cpus()


def test_global_pillow_settings_stay_unchanged(messy_tree: Path) -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    paths = [str(p) for p in messy_tree.rglob("*.*")]
    check.inspect_files(paths, workers=1)
    check.inspect_files(paths, workers=2, parallel_min_files=0)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before == (89478485, False)


def _modules_after(args: list[str]) -> tuple[object, set[str]]:
    """Run the CLI in a fresh interpreter; its exit code and which of torch/PIL/... it imported."""
    code = (
        "import sys\n"
        "from visionkit_core.cli import main\n"
        "code = 0\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = ('torch', 'torchvision', 'lightning', 'PIL')\n"
        "print(code, *[m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    exit_code, *modules = out.stdout.splitlines()[-1].split()
    return exit_code, set(modules)


def test_help_imports_no_pil_and_the_check_no_torch(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["cat", "dog"], per_class=1, size=16)
    assert _modules_after(["--help"]) == ("0", set())
    assert _modules_after(["data", "check", str(root)]) == ("0", {"PIL"})
