"""``visionkit export --check``: exported artefacts scored by each task's own metric, next to PyTorch.

Each task trains once (in-process, 16-64 px, a couple of epochs); the check swaps the exported
artefact into the task's forward and runs the same validation as ``visionkit validate``. A
deliberately broken export (normalisation left out) must fail it, through the real CLI.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cli_server
import pytest
import torch
from cli_server import Cli
from conftest import make_image_tree
from det_trees import make_coco_tree
from recipe_data import write_multilabel_manifest
from seg_trees import make_masks_tree
from visionkit_export.check import check_export
from visionkit_export.export import SUFFIX, check_export_dependencies, export_checkpoint

from visionkit_core.errors import UsageError
from visionkit_core.plugin.manager import load_plugins, use_plugins
from visionkit_core.run.assemble import run_train
from visionkit_core.run.config import resolve
from visionkit_core.workflows.evaluate import evaluate
from visionkit_core.workflows.inference import load_checkpoint

PROBE = Path(__file__).resolve().parents[2] / "probe_plugin"
TINY = {"backbone": "timm:test_resnet", "loggers": ["csv"], "seed": 0, "num_workers": 0}


def train(tmp: Path, sets: tuple[str, ...] = (), **flags: Any) -> Path:
    config = resolve(sets=sets, flags={**TINY, "run_dir": str(tmp / "run"), **flags})
    result = run_train(config, echo=lambda _: None)
    return Path(result.run_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cls")
    data = make_image_tree(tmp / "data", ["cat", "dog", "fox"], per_class=8, size=24)
    ckpt = train(tmp, data=str(data), epochs=3, image_size=32, batch_size=8, lr=0.01)
    return {"tmp": tmp, "data": data, "ckpt": ckpt}


@pytest.fixture
def probe_plugins() -> Iterator[Any]:
    sys.path.insert(0, str(PROBE))
    import visionkit_probe.plugin as probe

    plugins = load_plugins(autoload=False, extra=[("probe", probe)])
    with use_plugins(plugins):
        yield plugins
    sys.path.remove(str(PROBE))


def checked(ckpt: Path, fmt: str, tmp: Path) -> Any:
    """Export ``ckpt`` to ``fmt`` and check it with the default fp32 limit."""
    exported = export_checkpoint(ckpt, fmt, tmp / f"model{SUFFIX[fmt]}")
    return check_export(ckpt, exported.path, fmt, max_drop=0.01)


@pytest.fixture
def cli(request: pytest.FixtureRequest) -> Cli:
    """``cli("predict", ..., cwd=...)``: one visionkit command, a process of its own forked by the
    CLI server of tests/cli_server.py (torch imported once, not once per command)."""
    return Cli(request.config)


def test_the_check_reproduces_validate_and_prints_both_metrics_and_latency(
    classifier: dict[str, Path], cli: Cli
) -> None:
    out = cli(
        "export", "--ckpt", str(classifier["ckpt"]), "--format", "onnx", "--check", cwd=classifier["tmp"]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    validated = evaluate("validate", classifier["ckpt"], accelerator="cpu")["metrics"]["val/acc"]
    report = json.loads(Path(f"{classifier['ckpt'].with_suffix('.onnx')}.check.json").read_text())
    assert report["metric"] == "val/acc" and report["images"] == 24
    assert report["pytorch"] == pytest.approx(validated, abs=1e-6)  # the same code as `visionkit validate`
    assert report["exported"] == pytest.approx(validated, abs=1e-6) and report["passed"] is True
    assert report["pytorch_ms_per_image"] > 0 and report["exported_ms_per_image"] > 0
    assert "PyTorch       val/acc" in out.stdout and "onnx          val/acc" in out.stdout
    assert "drop +0.0000 (max allowed 0.01): passed" in out.stdout


class BGR(torch.nn.Module):
    """The classic preprocessing bug: the exported graph gets its colour channels reversed."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.flip(1))  # type: ignore[no-any-return]


def test_an_export_with_the_wrong_preprocessing_fails_the_check(
    classifier: dict[str, Path], cli: Cli
) -> None:
    tmp, ckpt = classifier["tmp"], classifier["ckpt"]
    module = BGR(load_checkpoint(ckpt).model.export_spec(32).module).eval()
    broken = tmp / "broken.torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.save(torch.jit.trace(module, torch.rand(2, 3, 32, 32)), str(broken))
    out = cli(
        "export", "--ckpt", str(ckpt), "--format", "torchscript", "--check", "--model", str(broken), cwd=tmp
    )
    assert out.returncode == 1, out.stdout + out.stderr[-2000:]
    report = json.loads(Path(f"{broken}.check.json").read_text())
    assert (
        report["passed"] is False
        and report["drop"] > 0.01
        and report["drop"] == pytest.approx(report["pytorch"] - report["exported"], abs=1e-6)
    )
    assert "FAILED" in out.stdout and "> --max-drop 0.01" in out.stderr


def test_a_file_that_is_not_an_exported_model_is_a_usage_error(classifier: dict[str, Path], cli: Cli) -> None:
    junk = classifier["tmp"] / "junk.onnx"
    junk.write_text("not a model")
    args = ["export", "--ckpt", str(classifier["ckpt"]), "-f", "onnx", "--check", "--model", str(junk)]
    out = cli(*args, cwd=classifier["tmp"])
    assert out.returncode == 2 and "is not a onnx model its runtime can load" in out.stderr, out.stderr[
        -2000:
    ]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_int8_and_openvino_pass_the_check_on_the_classifier(classifier: dict[str, Path], fmt: str) -> None:
    tmp, ckpt = classifier["tmp"], classifier["ckpt"]
    int8 = export_checkpoint(ckpt, fmt, tmp / f"int8{'.xml' if fmt == 'openvino' else '.onnx'}", int8=True,
                             calibration_images=16)  # fmt: skip
    assert int8.calibration_images == 16
    side = json.loads(Path(f"{int8.path}.json").read_text())
    assert side["int8"] is True and side["calibration_images"] == 16 and side["format"] == fmt
    result = check_export(ckpt, int8.path, fmt, max_drop=0.02)
    assert result.passed and result.drop < 0.02, result.to_dict()
    if fmt == "openvino":
        assert int8.path.with_suffix(".bin").stat().st_size > 0
        fp32 = export_checkpoint(ckpt, fmt, tmp / "fp32.xml")
        assert fp32.diff <= 1e-4
        assert check_export(ckpt, fp32.path, fmt).drop == pytest.approx(0.0, abs=1e-6)


def test_the_check_works_for_multilabel(tmp_path: Path) -> None:
    manifest = write_multilabel_manifest(tmp_path / "data", n=40, size=16)
    ckpt = train(tmp_path, task="multilabel", data=str(manifest), epochs=2, image_size=16, batch_size=8)
    result = checked(ckpt, "torchscript", tmp_path)
    assert result.metric == "val/map" and result.passed and result.drop == pytest.approx(0.0, abs=1e-4)


def test_the_check_works_for_segmentation(tmp_path: Path) -> None:
    data = make_masks_tree(tmp_path / "data", counts={"train": 8, "val": 4})
    ckpt = train(tmp_path, task="segmentation", data=str(data), epochs=1, image_size=32, batch_size=4)
    result = checked(ckpt, "torchscript", tmp_path)
    assert result.metric == "val/miou" and result.images == 4 and result.pytorch > 0
    assert result.passed and result.drop == pytest.approx(0.0, abs=1e-4)


def test_the_check_works_for_detection(tmp_path: Path) -> None:
    data = make_coco_tree(tmp_path / "coco", {"train": 8, "val": 4}, size=64)
    # an untrained detector finds nothing over the default 0.05: keep every box so mAP ranks real detections
    sets = ("task.score_thresh=0.001",)
    ckpt = train(
        tmp_path, sets, task="detection", data=str(data), epochs=4, image_size=64, batch_size=4, lr=0.01
    )
    result = checked(ckpt, "torchscript", tmp_path)
    assert result.metric == "val/map" and result.images == 4
    assert result.metrics_pytorch["val/mar_100"] > 0, result.to_dict()  # it finds objects: a real comparison
    assert result.metrics_exported == pytest.approx(result.metrics_pytorch, abs=1e-3)
    assert result.passed and result.drop == pytest.approx(0.0, abs=1e-3)


def test_the_check_works_for_a_plugin_task_judged_by_a_min_metric(tmp_path: Path, probe_plugins: Any) -> None:
    ckpt = train(tmp_path, task="brightness", epochs=1, batch_size=16)
    result = checked(ckpt, "onnx", tmp_path)
    assert result.metric == "val/mae" and result.mode == "min"
    assert result.passed and result.drop == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(UsageError, match="cannot be exported to torchscript"):
        export_checkpoint(ckpt, "torchscript", tmp_path / "x.pt")


@pytest.mark.parametrize(
    ("fmt", "int8", "message"),
    [
        ("tensorrt", False, "trtexec"),
        ("coreml", False, "coremltools"),
        ("torchscript", True, "--int8 works with --format onnx"),
        ("tflite", False, "use one of onnx, torchscript, openvino"),
    ],
)
def test_unsupported_targets_are_usage_errors_naming_what_is_needed(
    fmt: str, int8: bool, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        check_export_dependencies(fmt, int8)


def test_a_missing_export_package_names_the_pip_command(classifier: dict[str, Path]) -> None:
    # a process of its own where openvino cannot be imported, as where it is not installed
    args = ["export", "--ckpt", str(classifier["ckpt"]), "-f", "openvino"]
    out = cli_server.visionkit(*args, cwd=classifier["tmp"], block=["openvino"], timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "pip install 'visionkit[export]'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--data", "elsewhere"], "--data is what --check scores on"),
        (["--calibration-images", "10"], "--calibration-images applies to --int8"),
        (["--max-drop", "0.1"], "--max-drop applies to --check"),
    ],
)
def test_flags_without_their_mode_are_refused_not_ignored(
    tmp_path: Path, flags: list[str], message: str, cli: Cli
) -> None:
    out = cli("export", "--ckpt", "any.ckpt", "--format", "onnx", *flags, cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
