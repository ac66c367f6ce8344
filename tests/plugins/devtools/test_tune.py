"""`visionkit tune lr|batch-size`: Lightning's Tuner on the run train would build."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_image_tree
from visionkit_devtools.tune import run_tune, train_command

from visionkit_core.run.config import resolve

SMALL = ["--image-size", "16", "--batch-size", "4", "--backbone", "timm:test_resnet"]


def test_tune_lr_prints_a_suggestion_says_how_to_use_it_and_writes_the_plot(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_image_tree(tmp_path / "data", ["a", "b", "c"], per_class=6, size=16)
    out = run_cli(["tune", "lr", "--data", str(root), *SMALL, "--steps", "16", "--run-dir", "tune"])
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "tune" / "tune_lr.json").read_text())
    assert doc["suggestion"] is not None and 1e-6 <= doc["suggestion"] <= 1.0
    assert len(doc["lr"]) == len(doc["loss"]) > 10
    assert f"Suggested learning rate: {doc['suggestion']:.3g}" in out.stdout
    hint = f"Use it with: visionkit train --data {root} {' '.join(SMALL)} --lr {doc['suggestion']:.3g}"
    assert hint in out.stdout
    plot = tmp_path / "tune" / "plots" / "lr_find.png"
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "tune").rglob("*.ckpt"))  # the finder's temporary checkpoint is gone


def test_tune_batch_size_grows_the_batch_until_the_data_runs_out(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "data", ["a", "b"], per_class=10, size=16)
    config = resolve(
        flags={"data": str(root), "image_size": 16, "batch_size": 2, "backbone": "timm:test_resnet",
               "run_dir": str(tmp_path / "tb")}
    )  # fmt: skip
    result = run_tune("batch-size", config, mode="power", max_trials=4, steps_per_trial=1)
    assert result["batch_size"] in (8, 16)  # 16 training images: 2 -> 4 -> 8 (-> 16 is the whole set)
    assert (
        json.loads((tmp_path / "tb" / "tune_batch_size.json").read_text())["batch_size"]
        == result["batch_size"]
    )
    assert any(f"--batch-size {result['batch_size']}" in line for line in result["lines"])


def test_the_suggested_train_command_drops_tune_only_options() -> None:
    argv = [
        "visionkit",
        "tune",
        "lr",
        "--data",
        "d",
        "--lr",
        "0.1",
        "--steps=50",
        "--min-lr",
        "1e-5",
        "-e",
        "3",
    ]
    assert train_command(argv) == "visionkit train --data d -e 3"
