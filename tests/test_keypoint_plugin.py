"""A heatmap keypoint task over a registered feature backbone, written on the kit, runs through the CLI.

The keypoint plugin (tests/keypoint_plugin/visionkit_keypoints, under 400 lines) renders coloured
dots, builds ``timm:test_resnet`` as a feature backbone with ``kit.build_feature_backbone``, puts a
heatmap head on its stride-4/8 maps and is judged by ``val/mean_error`` (a torchmetrics Metric).
It is installed as a real distribution (dist-info with an entry point), like the probe plugin.
One training run (with ``--weights FILE``) is shared by every test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

PLUGIN = Path(__file__).parent / "keypoint_plugin"
STEM = "conv1.0.weight"  # timm:test_resnet's first conv, filled with STEM_VALUE in the weights file
STEM_VALUE = 0.25


def run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN)]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "visionkit_core", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import timm

    root = tmp_path_factory.mktemp("keypoints")
    site = root / "site"
    info = site / "visionkit_keypoints-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: visionkit-keypoints\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[visionkit]\nkeypoints = visionkit_keypoints.plugin\n")
    state = timm.create_model("test_resnet", num_classes=7).state_dict()  # a classifier's weights
    state[STEM] = torch.full_like(state[STEM], STEM_VALUE)
    torch.save(state, root / "w.pt")
    out = run(site, root, "train", "--task", "keypoints:heatmap", "--epochs", "2", "--batch-size", "16",
              "--weights", "w.pt", "--run-dir", "run", "--logger", "csv")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (root / "train.log").write_text(out.stdout + out.stderr)
    return {
        "site": site,
        "root": root,
        "run": root / "run",
        "ckpt": root / "run" / "checkpoints" / "last.ckpt",
    }


def test_it_trains_on_a_registered_feature_backbone_judged_by_its_metric(trained: dict[str, Path]) -> None:
    summary = json.loads((trained["run"] / "summary.json").read_text())
    assert summary["task"] == "keypoints:heatmap" and summary["backbone"] == "timm:test_resnet"
    assert summary["monitor"]["metric"] == "val/mean_error" and summary["monitor"]["mode"] == "min"
    assert 0.0 <= summary["metrics"]["val/mean_error"] < 32.0 and 0.0 <= summary["metrics"]["val/pck"] <= 1.0
    meta = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["visionkit"]
    assert meta["data_info"]["extra"]["keypoint_names"] == ["red", "green", "blue"]  # data-derived
    history = (trained["run"] / "plots" / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,train/loss,val/mean_error,val/pck" and len(history) == 3  # the kit's callback


def test_weights_file_reaches_the_feature_backbone(trained: dict[str, Path]) -> None:
    log = (trained["root"] / "train.log").read_text()
    assert "visionkit: loaded 48/48 tensors from w.pt" in log
    state = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    stem = state[f"backbone.{STEM}"]
    assert (stem - STEM_VALUE).abs().max() < 0.05  # the file's values, moved a little by 8 AdamW steps


def test_validate_from_the_checkpoint_alone(trained: dict[str, Path], tmp_path: Path) -> None:
    out = run(trained["site"], tmp_path, "validate", "--ckpt", str(trained["ckpt"]), "-o", "v.json")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["task"] == "keypoints" and 0.0 <= doc["metrics"]["val/mean_error"] < 32.0


def test_predict_writes_named_keypoints_in_original_pixels(trained: dict[str, Path], tmp_path: Path) -> None:
    Image.fromarray(np.full((24, 40, 3), 100, dtype=np.uint8)).save(tmp_path / "wide.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = run(
        trained["site"], tmp_path, "predict", "--ckpt", str(trained["ckpt"]), str(tmp_path), "-o", "p.json"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "broken.png" in out.stderr
    (row,) = json.loads((tmp_path / "p.json").read_text())
    assert row["size"] == [24, 40] and set(row["keypoints"]) == {"red", "green", "blue"}
    for x, y in row["keypoints"].values():
        assert 0.0 <= x <= 40.0 and 0.0 <= y <= 24.0


def test_export_onnx_gives_keypoints_and_heatmaps(trained: dict[str, Path], tmp_path: Path) -> None:
    import onnxruntime as ort

    out = run(
        trained["site"],
        tmp_path,
        "export",
        "--ckpt",
        str(trained["ckpt"]),
        "--format",
        "onnx",
        "-o",
        "m.onnx",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["output_names"] == ["keypoints", "heatmaps"] and side["keypoint_names"] == [
        "red",
        "green",
        "blue",
    ]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    keypoints, heatmaps = session.run(None, {"images": np.random.rand(5, 3, 32, 32).astype(np.float32)})
    assert keypoints.shape == (5, 3, 2) and heatmaps.shape == (5, 3, 32, 32)


def test_resume_last_with_one_more_epoch(trained: dict[str, Path], tmp_path: Path) -> None:
    shutil.copytree(trained["run"], tmp_path / "run")
    out = run(trained["site"], tmp_path, "train", "--task", "keypoints:heatmap", "--resume", "last",
              "--epochs", "3", "--run-dir", "run", "--logger", "csv")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    history = (tmp_path / "run" / "plots" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2"]  # continued, not restarted
    before = torch.load(trained["ckpt"], weights_only=True)["global_step"]
    after = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert before > 0 and after == before // 2 * 3  # one more epoch of the same steps


def test_a_backbone_without_feature_maps_is_refused_naming_it(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    out = run(trained["site"], tmp_path, "train", "--task", "keypoints:heatmap",
              "--backbone", "torchvision:alexnet", "--epochs", "1", "--run-dir", "run")  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (
        "backbone 'torchvision:alexnet' (plugin 'visionkit_torchvision') gives only class logits"
        in out.stderr
    )
    assert not (tmp_path / "run").exists()
