"""Tests of the plugin_name plugin: registration (no torch), conformance, and a real CLI run.

Run them with the package installed (``pip install -e ".[test]"``): visionkit finds the
plugin through its entry point, exactly as a user's installation will.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from visionkit_plugin_name import plugin

from visionkit_core.plugin.manager import load_plugins
from visionkit_core.testing import assert_plugin_conforms


def test_the_plugin_registers_its_components() -> None:
    plugins = load_plugins(builtins=(), autoload=False, extra=[("plugin_name", plugin)])
    registry = plugins.registry
    assert not plugins.failed, [info.errors for info in plugins.failed]
    for kind, qualname in [
        ("backbone", "plugin_name:tinynet"),
        ("task", "plugin_name:smooth-classifier"),
        ("dataset", "plugin_name:toy"),
        ("callback", "plugin_name:epoch-file"),
        ("logger", "plugin_name:jsonl"),
    ]:
        assert registry.resolve(kind, qualname).qualname == qualname


def test_the_plugin_conforms(tmp_path: Path) -> None:
    """What `visionkit plugins check plugin_name` runs: imports, option types, smoke runs."""
    report = assert_plugin_conforms("plugin_name", work_dir=tmp_path)
    checks = {(r.name, r.check): r.message for r in report.results if r.status == "ok"}
    assert ("plugin_name:smooth-classifier", "smoke:predict") in checks
    assert "truth Sample {label}" in checks["plugin_name:toy", "smoke:batch"]  # (images, {"label"})


def test_installed_plugin_trains_one_epoch(tmp_path: Path) -> None:
    env = {**os.environ, "VISIONKIT_STRICT_PLUGINS": "1", "WANDB_MODE": "offline"}
    args = ["train", "--task", "plugin_name:smooth-classifier", "--epochs", "1",
            "--set", "backbone.width=8", "--callback", "plugin_name:epoch-file",
            "--logger", "plugin_name:jsonl", "--run-dir", str(tmp_path / "run")]  # fmt: skip
    cmd = [sys.executable, "-m", "visionkit_core", *args]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["backbone"] == "plugin_name:tinynet" and summary["dataset"] == "plugin_name:toy"
    assert summary["epochs"] == 1 and 0.0 <= summary["metrics"]["val/acc"] <= 1.0
    assert (tmp_path / "run" / "plugin_name-epochs.txt").read_text() == "0\n"
    assert (tmp_path / "run" / "plugin_name-metrics.jsonl").is_file()
