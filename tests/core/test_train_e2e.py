"""`visionkit train` end to end: the CLI on digits, a plugin's backbone, a timm backbone."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import make_image_tree

from visionkit_core import hookimpl
from visionkit_core.plugin.manager import load_plugins
from visionkit_core.run.assemble import run_train
from visionkit_core.run.config import resolve


def test_cli_trains_digits_and_writes_the_run_directory(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the demo's defaults (resnet18 on digits at 32 px), a few batches of its one epoch
    few = ["--set", "trainer.limit_train_batches=8", "--set", "trainer.limit_val_batches=2"]
    out = run_cli(["train", "--epochs", "1", "--run-dir", "run", *few])
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    bests = list((run / "checkpoints").glob("best-*.ckpt"))
    assert len(bests) == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["skipped_images"] == 0
    assert 0.0 < summary["metrics"]["val/acc"] <= 1.0 and "val/loss" in summary["metrics"]
    assert summary["best_checkpoint"] == str(bests[0].resolve())
    assert summary["train_images_per_s"] > 0 and summary["wall_s"] > 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["backbone"] == "resnet18" and config["data"] == "digits" and config["image_size"] is None
    assert config["derived"]["preprocessing"]["image_size"] == 32  # the dataset's default, recorded
    plots = {p.name for p in (run / "plots").iterdir()}
    assert {
        "training_curves.png",
        "confusion_matrix.png",
        "per_class_metrics.csv",
        "misclassified.png",
    } <= plots
    assert "Final val/acc" in out.stdout and f"Best checkpoint: {bests[0].resolve()}" in out.stdout
    # the same run directory is never silently overwritten
    again = run_cli(["train", "--epochs", "1", "--run-dir", "run", *few])
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert (run / "checkpoints" / "last.ckpt").is_file()


class TinyNetPlugin:
    """A throwaway third-party plugin contributing one backbone."""

    built: list[int] = []

    @staticmethod
    def tinynet(*, num_classes: int, pretrained: bool = False, width: int = 8):  # type: ignore[no-untyped-def]
        import torch.nn as nn

        TinyNetPlugin.built.append(width)
        return nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )

    @hookimpl
    def visionkit_register_backbones(self, registry):  # type: ignore[no-untyped-def]
        registry.add("tinynet", TinyNetPlugin.tinynet, description="test network")


def test_a_plugin_on_a_fresh_manager_contributes_the_backbone_train_uses(tmp_path: Path) -> None:
    data = make_image_tree(tmp_path / "data", ["a", "b"], per_class=6, size=24)
    plugins = load_plugins(autoload=False, extra=[("tiny", TinyNetPlugin())])
    config = resolve(
        sets=["backbone.width=6"],
        flags={
            "backbone": "tiny:tinynet",
            "data": str(data),
            "epochs": 1,
            "batch_size": 4,
            "image_size": 24,
            "run_dir": str(tmp_path / "run"),
        },
    )
    result = run_train(config, plugins=plugins)
    assert TinyNetPlugin.built[-1] == 6
    assert result.summary["backbone"] == "tiny:tinynet"
    assert result.summary["class_names"] == ["a", "b"]
    assert Path(result.summary["last_checkpoint"]).is_file()


def test_timm_convnext_tiny_trains_on_a_user_folder(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = make_image_tree(tmp_path / "photos", ["cat", "dog", "fox"], per_class=4, size=56)
    out = run_cli(
        [
            "train",
            "--backbone",
            "timm:convnext_tiny",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--image-size",
            "48",
            "--no-pretrained",
            "--batch-size",
            "4",
            "--run-dir",
            "run",
        ]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["backbone"] == "timm:convnext_tiny" and summary["class_names"] == ["cat", "dog", "fox"]
    assert summary["global_step"] == 3  # 12 images, batch 4, drop_last


def test_a_dataset_name_wins_over_a_folder_of_that_name(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from visionkit_core.run.assemble import resolve_data

    make_image_tree(tmp_path / "digits", ["a", "b"], per_class=1, size=8, splits=("",))
    monkeypatch.chdir(tmp_path)
    plugins = load_plugins(autoload=False)
    assert resolve_data("digits", plugins)[0].qualname == "visionkit:digits"
    comp, root = resolve_data("./digits", plugins)
    assert comp.qualname == "visionkit:imagefolder" and root == "digits"
