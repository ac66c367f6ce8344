"""A heatmap keypoint task over a registered feature backbone, written on the kit, runs through the CLI.

The keypoint plugin (tests/kit/heatmap_plugin/vk_heatmap, under 400 lines) renders coloured
dots, builds ``timm:test_resnet`` as a feature backbone with ``kit.build_feature_backbone``, puts a
heatmap head on its stride-4/8 maps and is judged by ``val/mean_error`` (a torchmetrics Metric).
It is installed as a real distribution (dist-info with an entry point), like the probe plugin.
One training run (with ``--weights FILE``; 72 steps, about 1 px mean error) is shared by every test.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_server import Cli
from PIL import Image

PLUGIN = Path(__file__).parent / "heatmap_plugin"
STEM = "conv1.0.weight"  # timm:test_resnet's first conv, random but known in the weights file


def heat_cli(config: pytest.Config, site: Path) -> Cli:
    """Commands in processes that find the plugin as an installed distribution (tests/cli_server.py)."""
    return Cli(config, pythonpath=[site, PLUGIN])  # one compute thread: tests/conftest.py


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed as a distribution: its dist-info, found on the commands' PYTHONPATH."""
    site = tmp_path_factory.mktemp("heatmap-site")
    info = site / "vk_heatmap-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vk-heatmap\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[visionkit]\nheat = vk_heatmap.plugin\n")
    return site


@pytest.fixture
def run(request: pytest.FixtureRequest, site: Path) -> Cli:
    return heat_cli(request.config, site)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, site: Path
) -> dict[str, Path]:
    import timm

    root = tmp_path_factory.mktemp("keypoints")
    state = timm.create_model("test_resnet", num_classes=7).state_dict()  # a classifier's weights
    state[STEM] = torch.randn(state[STEM].shape, generator=torch.Generator().manual_seed(123)) * 0.3
    torch.save(state, root / "w.pt")
    out = heat_cli(request.config, site)(
        "train", "--task", "heat:heatmap", "--epochs", "3", "--batch-size", "16", "--lr", "0.01",
        "--set", "data.train_size=384", "--weights", "w.pt", "--run-dir", "run", "--logger", "csv",
        cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (root / "train.log").write_text(out.stdout + out.stderr)
    return {
        "root": root,
        "run": root / "run",
        "ckpt": root / "run" / "checkpoints" / "last.ckpt",
    }


def test_it_trains_on_a_registered_feature_backbone_judged_by_its_metric(trained: dict[str, Path]) -> None:
    summary = json.loads((trained["run"] / "summary.json").read_text())
    assert summary["task"] == "heat:heatmap" and summary["backbone"] == "timm:test_resnet"
    assert summary["monitor"]["metric"] == "val/mean_error" and summary["monitor"]["mode"] == "min"
    # it learns: ~10 px from untrained heads, about 1 px after these 72 steps (PCK@2px ~0.85)
    assert summary["metrics"]["val/mean_error"] < 3.0 and summary["metrics"]["val/pck"] > 0.5
    meta = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["visionkit"]
    assert meta["data_info"]["extra"]["keypoint_names"] == ["red", "green", "blue"]  # data-derived
    history = (trained["run"] / "plots" / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,train/loss,val/mean_error,val/pck" and len(history) == 4  # the kit's callback


def test_weights_file_reaches_the_feature_backbone(trained: dict[str, Path]) -> None:
    log = (trained["root"] / "train.log").read_text()
    assert "visionkit: loaded 48/48 tensors from w.pt" in log
    trained_stem = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["state_dict"][
        f"backbone.{STEM}"
    ]
    given = torch.load(trained["root"] / "w.pt", weights_only=True)[STEM]
    # the file's values (|w| ~0.24 on average), moved a little by training (a fresh init differs by ~0.3)
    assert (trained_stem - given).abs().mean() < 0.1


def test_validate_from_the_checkpoint_alone(trained: dict[str, Path], tmp_path: Path, run: Cli) -> None:
    out = run("validate", "--ckpt", str(trained["ckpt"]), "-o", "v.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["task"] == "heatmap-keypoints" and doc["metrics"]["val/mean_error"] < 3.0


def test_predict_writes_named_keypoints_in_original_pixels(
    trained: dict[str, Path], tmp_path: Path, run: Cli
) -> None:
    sys.path.insert(0, str(PLUGIN))
    try:
        from vk_heatmap.data import render
    finally:
        sys.path.remove(str(PLUGIN))
    image, truth = render(5, 32, 77, ["red", "green", "blue"])  # dots the model never saw
    wide = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((64, 48), Image.Resampling.NEAREST)
    wide.save(tmp_path / "wide.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = run("predict", "--ckpt", str(trained["ckpt"]), str(tmp_path), "-o", "p.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "broken.png" in out.stderr
    (row,) = json.loads((tmp_path / "p.json").read_text())
    assert row["size"] == [48, 64] and list(row["keypoints"]) == ["red", "green", "blue"]
    for (x, y), (tx, ty) in zip(row["keypoints"].values(), truth.tolist(), strict=True):
        assert abs(x - 2.0 * tx) < 5.0 and abs(y - 1.5 * ty) < 4.0, (x, y, tx, ty)  # in the 64 x 48 image


def test_export_onnx_gives_keypoints_and_heatmaps(trained: dict[str, Path], tmp_path: Path, run: Cli) -> None:
    import onnxruntime as ort

    out = run("export", "--ckpt", str(trained["ckpt"]), "--format", "onnx", "-o", "m.onnx", cwd=tmp_path)
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


def test_resume_last_with_one_more_epoch(trained: dict[str, Path], tmp_path: Path, run: Cli) -> None:
    shutil.copytree(trained["run"], tmp_path / "run")
    out = run("train", "--task", "heat:heatmap", "--resume", "last",
              "--epochs", "4", "--run-dir", "run", "--logger", "csv", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    history = (tmp_path / "run" / "plots" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2", "3"]  # continued, not restarted
    before = torch.load(trained["ckpt"], weights_only=True)["global_step"]
    after = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert before > 0 and after == before // 3 * 4  # one more epoch of the same steps


def test_a_backbone_without_feature_maps_is_refused_naming_it(
    trained: dict[str, Path], tmp_path: Path, run: Cli
) -> None:
    out = run("train", "--task", "heat:heatmap", "--backbone", "torchvision:alexnet",
              "--epochs", "1", "--run-dir", "run", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (
        "backbone 'torchvision:alexnet' (plugin 'visionkit_torchvision') gives only class logits"
        in out.stderr
    )
    assert not (tmp_path / "run").exists()
