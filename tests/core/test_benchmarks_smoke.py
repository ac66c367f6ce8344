"""The benchmarks run (tiny sizes, one repeat) and report what the runner expects; no timing asserts.

Also the data-path checks the benchmarks rely on: visionkit's loaders give the pixels of the
torchvision + PIL reference pipeline, decode on one thread, and draw seeded augmentations
exactly as before the cheaper RNG handling.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import demo, discovery, gpu, loader, overhead, startup  # noqa: E402
from benchmarks import run as runner  # noqa: E402


def check_targets(doc: dict[str, Any]) -> None:
    assert doc["targets"], "every benchmark states at least one target"
    for row in doc["targets"]:
        assert set(row) >= {"name", "value", "target", "met"}
        assert isinstance(row["met"], bool)
        assert row["target"].startswith(("<=", ">="))
        assert isinstance(row["value"], (int, float))


# -- the benchmarks, quick -----------------------------------------------------------------------


def test_startup_quick_reports_ratios_and_no_heavy_imports() -> None:
    doc = startup.run(quick=True, repeats=1)
    check_targets(doc)
    rows = {r["command"]: r for r in doc["rows"]}
    assert set(rows) == {"python -c pass", 'python -c "import torch"', *startup.VISIONKIT_COMMANDS}
    assert rows['python -c "import torch"']["ratio_to_import_torch"] == 1.0
    for label in startup.VISIONKIT_COMMANDS:
        assert rows[label]["heavy_imports"] == [], f"{label} imported {rows[label]['heavy_imports']}"
        assert rows[label]["median_s"] > 0
    assert "| `visionkit --help` |" in startup.markdown(doc)


def test_discovery_quick_loads_the_fake_plugins() -> None:
    doc = discovery.benchmark(quick=True, repeats=1)
    check_targets(doc)
    assert [row["plugins"] for row in doc["rows"]] == [0, 2]  # type: ignore[index]
    assert doc["rows"][0]["ratio"] == 1.0  # type: ignore[index]


def test_loader_quick_matches_the_reference_pixels() -> None:
    doc = loader.run(quick=True)
    check_targets(doc)
    (row,) = doc["rows"]
    assert row["workers"] == 0 and row["train_shapes_and_dtypes_equal"]
    for key in ("visionkit/train", "visionkit+normalise/eval", "torchvision/eval"):
        assert row["images_per_s"][key] > 0
    same = doc["same_output"]
    assert same["labels_equal"] and same["shapes_and_dtypes_equal"]
    assert same["max_pixel_diff"] <= loader.MAX_PIXEL_DIFF
    assert "RandomResizedCrop" in loader.markdown(doc)


@pytest.mark.slow
def test_overhead_quick_runs_visionkit_and_lightning_with_equal_losses() -> None:
    # three fresh interpreters (~15 CPU s each importing torch, Lightning and timm) would pass the
    # per-test budget: visionkit against the Lightning reference here, the raw loop in the next test
    doc = overhead.run(quick=True, programs=("visionkit",))
    check_targets(doc)
    (row,) = doc["rows"]
    assert set(row["median"]) == {"visionkit", "lightning"}
    for program in ("visionkit", "lightning"):
        figures = row["median"][program]
        assert figures["steps_per_s"] > 0 and figures["max_rss_mib"] > 0
        assert len(row["loss_first_steps"][program]) >= 3
    # same model, data, order, optimiser and schedule: the same losses (not a timing)
    assert row["losses_agree"] and set(row["loss_max_abs_diff_first_steps"]) == {"visionkit-lightning"}
    assert math.isfinite(row["memory_ratio_vs_lightning"])
    text = overhead.markdown(doc)
    assert "First epoch" in text and "| - |" in text  # the raw loop's figures: not run


@pytest.mark.slow
def test_overhead_quick_raw_loop_matches_lightning() -> None:
    doc = overhead.run(quick=True, programs=("raw",))
    (row,) = doc["rows"]
    assert row["median"]["raw"]["steps_per_s"] > 0
    assert row["losses_agree"] and set(row["loss_max_abs_diff_first_steps"]) == {"lightning-raw"}
    assert math.isnan(row["steps_ratio_vs_lightning"])  # visionkit did not run


@pytest.mark.slow
def test_demo_quick_reads_the_summary() -> None:
    doc = demo.run(quick=True)
    check_targets(doc)
    (run,) = doc["runs"]
    assert 0.0 <= run["val_acc"] <= 1.0 and run["epochs"] >= 1 and run["wall_s"] > 0
    assert run["final_line"].startswith("Final ")
    assert "val/acc" in demo.markdown(doc)


def test_runner_writes_dated_json_and_markdown(tmp_path: Path) -> None:
    assert runner.main(["--quick", "--only", "discovery", "--repeats", "1", "--out-dir", str(tmp_path)]) == 0
    (json_file,) = tmp_path.glob("*-quick.json")
    doc = json.loads(json_file.read_text())
    assert doc["quick"] and set(doc["benchmarks"]) == {"discovery"}
    assert doc["targets"] and doc["targets"][0]["benchmark"] == "discovery"
    text = json_file.with_suffix(".md").read_text()
    assert "## Targets" in text and "| benchmark | figure | value | target |" in text


def test_runner_rejects_unknown_benchmarks() -> None:
    with pytest.raises(SystemExit):
        runner.main(["--only", "nosuch", "--no-write"])


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path: Path) -> None:
    code = gpu.main(["--dry-run", "--no-compile", "--models", "test_resnet", "--out-dir", str(tmp_path)])
    (json_file,) = tmp_path.glob("gpu-*-dry-run.json")
    doc = json.loads(json_file.read_text())
    assert code == 0, doc["errors"]
    (row,) = doc["training"]
    assert row["model"] == "test_resnet" and row["mode"] == "eager" and row["img_per_s"] > 0
    assert row["gflops_per_image"] > 0 and row["precision"] == "32-true"
    assert doc["loader"] and all(r["visionkit_img_per_s"] > 0 for r in doc["loader"])
    assert "MFU" in json_file.with_suffix(".md").read_text()


# -- the data path -------------------------------------------------------------------------------


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + seed), np.cos(4 * y), np.sin(3 * (x + y))], -1) * 100 + 128
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("image_size", [64, 160])
def test_eval_loader_matches_torchvision_imagefolder_with_pil(tmp_path: Path, image_size: int) -> None:
    """Same files -> same normalised batches as ImageFolder + Resize/CenterCrop/ToTensor/Normalize."""
    for split in ("train", "val"):
        for c, (h, w) in enumerate([(256, 256), (200, 300), (333, 250)]):
            folder = tmp_path / split / f"c{c}"
            folder.mkdir(parents=True)
            Image.fromarray(_photo(h, w, c)).save(folder / "a.jpg", quality=90)
            Image.fromarray(_photo(w, h, c + 3)).save(folder / "b.png")
    ours = loader.visionkit_loaders(tmp_path, image_size, 4, 0)["eval"]
    ref = loader.reference_loaders(tmp_path, image_size, 4, 0)["eval"]
    same = loader.compare_eval(ours, ref)
    assert same["labels_equal"] and same["shapes_and_dtypes_equal"]
    # both decode with libjpeg-turbo/libpng; the uint8 antialiased resize rounds once, PIL's too
    assert same["max_pixel_diff"] <= 2, same
    assert same["mean_pixel_diff"] < 0.1, same


def _tiny_tree(root: Path) -> Path:
    for c in range(2):
        folder = root / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(6):
            Image.fromarray(_photo(40, 48, 10 * c + i)).save(folder / f"{i}.jpg")
    return root


def _thread_count_image(img: torch.Tensor) -> torch.Tensor:
    return torch.full((3, 16, 16), torch.get_num_threads(), dtype=torch.uint8)


def test_loading_runs_on_one_torch_thread_in_workers_and_in_the_main_process(tmp_path: Path) -> None:
    from visionkit_imagefolder.datamodule import ImageFolderDataModule

    root = _tiny_tree(tmp_path / "data")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for workers in (0, 1):
            dm = ImageFolderDataModule(root, batch_size=4, image_size=16, num_workers=workers, val_split=0.5)
            dm.setup("fit")
            assert dm.train_dataset is not None
            # the transform reports the thread count it ran with, as pixel values
            dm.train_dataset.transform = _thread_count_image
            images, _, _ = next(iter(dm.train_dataloader()))
            assert images.unique().tolist() == [1], f"num_workers={workers}"
            assert torch.get_num_threads() == 2  # restored after the main-process fetch
    finally:
        torch.set_num_threads(before)


def test_seeded_samples_are_unchanged_and_leave_the_global_rng_alone(tmp_path: Path) -> None:
    from visionkit_imagefolder.dataset import ImageFileDataset, train_transform
    from visionkit_imagefolder.folders import find_samples, scan_layout

    root = _tiny_tree(tmp_path / "data")
    layout = scan_layout(root)
    samples = find_samples(layout.train_dir, layout.classes, require_all=True)
    dataset = ImageFileDataset(samples, train_transform(24))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    for index, seed in [(0, 7), (3, 2**61 + 5), (5, 0)]:
        got = dataset[(index, seed)][0]
        with torch.random.fork_rng(devices=[]):  # how samples were seeded before
            torch.manual_seed(seed)
            expected = dataset[index][0]
        assert torch.equal(got, expected)
    assert torch.equal(torch.get_rng_state(), state)
