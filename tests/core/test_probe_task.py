"""A third-party task that is not classification trains, validates, predicts and exports through the CLI.

The probe plugin (tests/probe_plugin/visionkit_probe) regresses the mean brightness of images
from dict batches ``{"image", "target"}``, is judged by ``val/mae`` (min) and names no class;
it is installed as a real distribution (dist-info with an entry point) and uses only the
public API of ``visionkit_core``. Every command is a process of its own with the probe on its
``PYTHONPATH``, forked by the CLI server of tests/cli_server.py (torch imported once).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_server import Cli
from PIL import Image

PROBE = Path(__file__).resolve().parents[1] / "probe_plugin"


def probe_cli(config: pytest.Config, site: Path) -> Cli:
    """Commands in processes that find the probe plugin as an installed distribution."""
    return Cli(config, pythonpath=[site, PROBE])


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe installed as a distribution: its dist-info, found on the commands' PYTHONPATH."""
    site = tmp_path_factory.mktemp("probe-site")
    info = site / "visionkit_probe-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: visionkit-probe\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[visionkit]\nprobe = visionkit_probe.plugin\n")
    return site


@pytest.fixture
def run(request: pytest.FixtureRequest, site: Path) -> Cli:
    return probe_cli(request.config, site)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, site: Path
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe")
    out = probe_cli(request.config, site)(
        "train",
        "--task",
        "brightness",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--run-dir",
        "run",
        "--logger",
        "csv",
        cwd=root,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {
        "root": root,
        "run": root / "run",
        "ckpt": root / "run" / "checkpoints" / "last.ckpt",
    }


def test_it_trains_judged_by_its_own_metric(trained: dict[str, Path]) -> None:
    summary = json.loads((trained["run"] / "summary.json").read_text())
    assert summary["task"] == "probe:brightness" and summary["dataset"] == "probe:brightness"
    assert summary["monitor"]["metric"] == "val/mae" and summary["monitor"]["mode"] == "min"
    assert 0.0 <= summary["metrics"]["val/mae"] < 1.0
    assert summary["train_images_per_s"] > 0  # counted from dict batches
    best = Path(summary["best_checkpoint"]).name
    assert best.startswith("best-") and "val_mae=" in best


def test_the_core_writes_the_checkpoint_metadata(trained: dict[str, Path]) -> None:
    import torch

    meta = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["visionkit"]
    assert meta["task"] == "brightness"
    assert meta["monitor"] == {"metric": "val/mae", "mode": "min"}
    assert meta["data_info"]["extra"] == {"target_range": [0.0, 1.0]}
    assert meta["preprocessing"]["image_size"] == 16
    assert meta["components"]["task"]["distribution"] == "visionkit-probe"
    config = (trained["run"] / "config.yaml").read_text()
    assert "target_range" in config  # the data-derived values are recorded in config.yaml too


def test_validate_from_the_checkpoint_alone(trained: dict[str, Path], tmp_path: Path, run: Cli) -> None:
    out = run("validate", "--ckpt", str(trained["ckpt"]), "-o", "v.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["task"] == "brightness" and 0.0 <= doc["metrics"]["val/mae"] < 1.0


def test_test_on_data_without_a_test_split_names_dataset_and_split(
    trained: dict[str, Path], run: Cli
) -> None:
    out = run("test", "--ckpt", str(trained["ckpt"]), cwd=trained["root"])
    assert out.returncode == 2
    assert "dataset 'probe:brightness' has no test split" in out.stderr
    assert "Traceback" not in out.stderr


def test_predict_writes_the_tasks_own_output(trained: dict[str, Path], tmp_path: Path, run: Cli) -> None:
    for name, level in (("dark.png", 20), ("bright.png", 235)):
        Image.fromarray(np.full((24, 30, 3), level, dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = run("predict", "--ckpt", str(trained["ckpt"]), str(tmp_path), "-o", "p.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "broken.png" in out.stderr  # named and skipped
    rows = {Path(r["path"]).name: r for r in json.loads((tmp_path / "p.json").read_text())}
    assert set(rows) == {"dark.png", "bright.png"}
    assert rows["dark.png"]["size"] == [24, 30]  # the original size reaches the task
    bad = run("predict", "--ckpt", str(trained["ckpt"]), str(tmp_path), "-o", "p.csv", cwd=tmp_path)
    assert bad.returncode == 2 and "writes a .json file" in bad.stderr


def test_export_onnx_is_checked_and_runs_in_onnxruntime(
    trained: dict[str, Path], tmp_path: Path, run: Cli
) -> None:
    out = run(
        "export",
        "--ckpt",
        str(trained["ckpt"]),
        "--format",
        "onnx",
        "-o",
        "m.onnx",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["task"] == "brightness" and side["output_names"] == ["brightness"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (values,) = session.run(["brightness"], {"images": np.random.rand(5, 3, 16, 16).astype(np.float32)})
    assert values.shape == (5,)
    torchscript = run("export", "--ckpt", str(trained["ckpt"]), "--format", "torchscript", cwd=tmp_path)
    assert torchscript.returncode == 2 and "supports: onnx" in torchscript.stderr


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime", "onnxscript"])
def test_export_without_an_optional_package_names_the_pip_command(
    trained: dict[str, Path], tmp_path: Path, missing: str, run: Cli
) -> None:
    # sys.modules[missing] = None in the command's process: what an environment without it looks like
    out = run("export", "--ckpt", str(trained["ckpt"]), "--format", "onnx", "-o", "m.onnx", cwd=tmp_path,
              block=[missing])  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"needs the {missing!r} package" in out.stderr
    assert "pip install 'visionkit[export]'" in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_weights_and_init_from_are_refused_for_a_task_that_takes_no_weights(
    trained: dict[str, Path], tmp_path: Path, run: Cli
) -> None:
    """Never silently dropped: the flag is refused naming the task, and no run directory is left."""
    (tmp_path / "w.pt").write_bytes(b"")
    for flag, value in (("--weights", "w.pt"), ("--init-from", str(trained["ckpt"]))):
        out = run("train", "--task", "brightness", "--epochs", "1", flag, value,
                  "--run-dir", "r", "--logger", "csv", cwd=tmp_path)  # fmt: skip
        assert out.returncode == 2, out.stderr[-2000:]
        assert f"{flag}: task 'probe:brightness'" in out.stderr and "takes no weights" in out.stderr
        assert "Traceback" not in out.stderr and not (tmp_path / "r" / "checkpoints").exists()
