"""The segmentation task through the real CLI, in subprocesses: train once, then use the checkpoint alone.

One session-scoped training run (tiny masks tree, 2 epochs, 32 px, deterministic) is shared by
the tests that read it: predict at original size, ONNX export run by onnxruntime at another
size, validate from the checkpoint alone, resume exactly after a kill. Data check, bad-image
refusal and 2-process CPU DDP run on their own small trees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import cli_server
import numpy as np
import pytest
from PIL import Image
from seg_trees import CLASSES, make_masks_tree, scene

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")

TINY = ["--task", "segmentation", "--image-size", "32", "--batch-size", "4", "--backbone", "timm:test_resnet"]
TRAIN = ["train", *TINY, "--epochs", "2", "--deterministic", "--seed", "3"]


def cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``visionkit ARGS`` as a process of its own, forked by the shared CLI server (tests/cli_server.py)."""
    return cli_server.visionkit(*args, cwd=cwd, timeout=timeout)


def metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "summary.json").read_text())["metrics"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One finished 2-epoch run on a tiny masks tree with a test split."""
    base = tmp_path_factory.mktemp("seg-e2e")
    data = make_masks_tree(base / "data", counts={"train": 8, "val": 4, "test": 4})
    out = cli(*TRAIN, "--data", str(data), "--run-dir", "run", cwd=base)
    assert out.returncode == 0, out.stderr[-3000:]
    run = base / "run"
    return {"base": base, "data": data, "run": run, "ckpt": run / "checkpoints" / "last.ckpt"}


def test_training_writes_the_run_directory_with_miou_and_the_plots(trained):
    run = trained["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["class_names"] == CLASSES
    assert 0.0 <= summary["metrics"]["val/miou"] <= 1.0 and "val/pixel_acc" in summary["metrics"]
    for name in ("segmentation_samples.png", "per_class_iou.png", "per_class_iou.csv"):
        assert (run / "plots" / name).stat().st_size > 0


def test_predict_writes_masks_at_each_inputs_original_size(trained, tmp_path):
    sizes = {"wide": (30, 70), "tall": (66, 24)}
    for name, (h, w) in sizes.items():
        Image.fromarray(scene(5, size=w, height=h)[0]).save(tmp_path / f"{name}.png")
    out = cli("predict", "--ckpt", str(trained["ckpt"]), str(tmp_path), "--output", "masks", "--overlay",
              cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for name, (h, w) in sizes.items():
        with Image.open(tmp_path / "masks" / f"{name}.png") as im:
            assert im.mode == "L" and im.size == (w, h)
            assert np.asarray(im).max() < len(CLASSES)
        with Image.open(tmp_path / "masks" / f"{name}_overlay.png") as im:
            assert im.size == (w, h)


def test_exported_onnx_runs_in_onnxruntime_at_another_size_and_matches_pytorch(trained, tmp_path):
    import onnxruntime as ort
    import torch
    from visionkit_segmentation.export import ExportedSegmenter
    from visionkit_segmentation.model import Segmenter

    out = cli(
        "export", "--ckpt", str(trained["ckpt"]), "--format", "onnx", "--output", "m.onnx", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert sidecar["class_names"] == CLASSES
    images = torch.rand(3, 3, 48, 72, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"images": images.numpy()})[0]
    reference = ExportedSegmenter(Segmenter.load_from_checkpoint(trained["ckpt"], map_location="cpu")).eval()
    with torch.no_grad():
        expected = reference(images).numpy()
    assert got.shape == (3, len(CLASSES), 48, 72)
    assert np.abs(got - expected).max() < 1e-3


def test_validate_from_the_checkpoint_alone_reproduces_the_final_metrics(trained, tmp_path):
    out = cli("validate", "--ckpt", str(trained["ckpt"]), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((trained["run"] / "validate.json").read_text())
    got = result.get("metrics", result)
    final = metrics(trained["run"])
    assert abs(got["val/miou"] - final["val/miou"]) <= 1e-6
    assert abs(got["val/pixel_acc"] - final["val/pixel_acc"]) <= 1e-6


def test_a_killed_run_resumes_exactly(trained, tmp_path):
    """SIGKILL after the first epoch, --resume last: the final metrics of the uninterrupted run."""
    args = [*TRAIN, "--data", str(trained["data"]), "--run-dir", "cut"]
    proc = cli_server.start(*args, cwd=tmp_path)
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "summary.json").exists()  # it really did not finish
    resumed = cli("train", "--resume", "last", "--run-dir", "cut", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = metrics(trained["run"]), metrics(tmp_path / "cut")
    for key in ("val/miou", "val/loss", "val/pixel_acc", "train/loss_epoch"):
        assert abs(a[key] - b[key]) <= 1e-6, (key, a[key], b[key])


def spoiled_tree(root: Path) -> dict[str, str]:
    make_masks_tree(root)
    imgs, masks = root / "train" / "images", root / "train" / "masks"
    (masks / "train_000.png").unlink()
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(masks / "train_001.png")
    values = np.array(Image.open(masks / "train_002.png"))
    values[:2, :2] = 9
    Image.fromarray(values, mode="L").save(masks / "train_002.png")
    (imgs / "train_003.png").write_bytes(b"\x89PNG truncated")
    return {
        str(imgs / "train_000.png"): "no mask",
        str(masks / "train_001.png"): "12x10",
        str(masks / "train_002.png"): "values 9",
        str(imgs / "train_003.png"): "cannot read image",
    }


def test_data_check_names_each_bad_file_and_exits_1(tmp_path):
    bad = spoiled_tree(tmp_path / "bad")
    out = cli("data", "check", str(tmp_path / "bad"), cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    for path, reason in bad.items():
        line = next((ln for ln in out.stdout.splitlines() if path in ln), "")
        assert reason in line, (path, out.stdout)
    clean = cli("data", "check", str(make_masks_tree(tmp_path / "clean")), cwd=tmp_path)
    assert clean.returncode == 0 and "no problems found" in clean.stdout, clean.stdout + clean.stderr


def test_on_bad_image_error_stops_before_training_naming_every_bad_file(tmp_path):
    bad = spoiled_tree(tmp_path / "bad")
    out = cli("train", *TINY, "--data", str(tmp_path / "bad"), "--on-bad-image", "error", "--run-dir", "r",
              cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    for path in bad:
        assert path in out.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_two_process_cpu_ddp_trains(tmp_path):
    data = make_masks_tree(tmp_path / "data")
    out = cli("train", *TINY, "--data", str(data), "--epochs", "1", "--devices", "2", "--strategy", "ddp",
              "--accelerator", "cpu", "--run-dir", "ddp", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["val/miou"] <= 1.0
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").is_file()
