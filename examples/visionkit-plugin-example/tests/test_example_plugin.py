"""End to end: the installed example plugin, seen and used through the real ``visionkit`` CLI.

Run after ``pip install visionkit examples/visionkit-plugin-example`` (``nox -s plugin`` does
both in a fresh environment). Every command runs in a subprocess with strict plugin loading,
so any plugin that fails to load fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

HOOKS = {
    "visionkit_register_backbones",
    "visionkit_register_datasets",
    "visionkit_register_callbacks",
    "visionkit_register_loggers",
    "visionkit_add_commands",
    "visionkit_configure_trainer",
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def visionkit(args: Sequence[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VISIONKIT_STRICT_PLUGINS": "1",
        "VISIONKIT_CACHE_DIR": str(cache),
        "WANDB_MODE": "offline",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    return subprocess.run(
        [sys.executable, "-m", "visionkit_core", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_plugins_list_shows_the_example_plugin(tmp_path: Path, cache_dir: Path) -> None:
    out = visionkit(["plugins", "list", "--json"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    plugin = next(p for p in json.loads(out.stdout)["plugins"] if p["name"] == "example")
    assert plugin["distribution"] == "visionkit-plugin-example"
    assert plugin["version"] == "0.1.0"
    assert plugin["builtin"] is False and plugin["status"] == "loaded" and plugin["errors"] == []
    assert set(plugin["hooks"]) == HOOKS
    assert set(plugin["registered"]) == {
        "backbone example:tinynet",
        "dataset example:shapes",
        "callback example:record-epochs",
        "logger example:jsonl",
    }


def test_the_plugin_conforms(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``visionkit_core.testing``: the checks of ``visionkit plugins check example``, in process."""
    from visionkit_core.testing import assert_plugin_conforms

    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(cache_dir))
    report = assert_plugin_conforms("example", work_dir=tmp_path)
    passed = {(r.name, r.check) for r in report.results if r.status == "ok"}
    assert ("example:tinynet", "smoke:forward") in passed
    assert ("example:shapes", "smoke:batch") in passed
    assert ("example:jsonl", "options") in passed


def test_plugins_check_passes(tmp_path: Path, cache_dir: Path) -> None:
    out = visionkit(["plugins", "check", "example"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert out.stdout.splitlines()[-1].endswith("all passed")
    assert "ok example backbone example:tinynet: smoke:forward:" in out.stdout


def test_the_plugin_keeps_help_and_plugins_list_light(tmp_path: Path, cache_dir: Path) -> None:
    code = (
        "import sys\nfrom visionkit_core.cli import main\n"
        "for args in (['--help'], ['plugins', 'list']):\n"
        "    try:\n        main(args)\n"
        "    except SystemExit as e:\n        assert e.code in (0, None), e.code\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'lightning', 'PIL', 'numpy') if m in sys.modules))\n"
    )
    env = {**os.environ, "VISIONKIT_STRICT_PLUGINS": "1", "VISIONKIT_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "HEAVY="


def test_models_list_namespace_shows_its_backbone(tmp_path: Path, cache_dir: Path) -> None:
    out = visionkit(["models", "list", "--namespace", "example"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["example:tinynet"]


def test_its_command_runs(tmp_path: Path, cache_dir: Path) -> None:
    out = visionkit(["example-hello", "--name", "visionkit"], tmp_path, cache_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Hello, visionkit! (from visionkit-plugin-example 0.1.0)"


def test_train_one_epoch_with_its_backbone_dataset_callback_and_logger(
    tmp_path: Path, cache_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--backbone", "example:tinynet",
        "--data", "example:shapes",
        "--callback", "example:record-epochs",
        "--logger", "example:jsonl",
        "--logger", "csv",
        "--epochs", "1",
        "--set", "backbone.width=8",
        "--run-dir", str(run_dir),
    ]  # fmt: skip
    out = visionkit(args, tmp_path, cache_dir)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["backbone"] == "example:tinynet" and summary["dataset"] == "example:shapes"
    assert summary["class_names"] == ["circle", "square", "triangle"] and summary["epochs"] == 1
    assert 0.0 <= summary["metrics"]["val/acc"] <= 1.0

    recorded = json.loads((run_dir / "example_callback.json").read_text())
    assert recorded["epochs"] == [0]
    assert recorded["val_acc"] == [pytest.approx(summary["metrics"]["val/acc"], abs=1e-5)]
    assert recorded["configured"] == {"max_epochs": 1}  # set by its visionkit_configure_trainer

    lines = [json.loads(x) for x in (run_dir / "example_metrics.jsonl").read_text().splitlines()]
    assert any("val/acc" in rec.get("metrics", {}) for rec in lines)
    assert (run_dir / "metrics.csv").is_file()  # the built-in csv logger ran alongside

    images = sorted((cache_dir / "example-shapes-v1" / "train").glob("*/*.png"))
    assert len(images) == 3 * 60


def test_pretrained_is_a_clear_error(tmp_path: Path, cache_dir: Path) -> None:
    args = [
        "train",
        "--backbone",
        "example:tinynet",
        "--data",
        "example:shapes",
        "--pretrained",
        "--epochs",
        "1",
    ]
    out = visionkit([*args, "--run-dir", str(tmp_path / "run")], tmp_path, cache_dir)
    assert out.returncode == 2
    assert "example:tinynet has no pretrained weights" in out.stderr
    assert "Traceback" not in out.stderr
