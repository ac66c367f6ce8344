"""The CLI in a subprocess: light --help, listings, config show, clear usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from visionkit_core import HOOKSPEC_VERSION

HEAVY = ("torch", "lightning", "timm", "wandb", "torchvision")


def _imported_by(args: list[str]) -> list[str]:
    code = (
        "import sys\n"
        "from visionkit_core.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("HEAVY="))
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plugins", "list"], ["train", "--help"]])
def test_light_commands_import_no_heavy_module(args: list[str]) -> None:
    assert _imported_by(args) == []


def test_help_lists_the_commands(run_cli) -> None:  # type: ignore[no-untyped-def]
    out = run_cli(["--help"])
    assert out.returncode == 0
    for cmd in ("train", "config", "plugins", "models", "datasets"):
        assert cmd in out.stdout


def test_version(run_cli) -> None:  # type: ignore[no-untyped-def]
    from visionkit_core import __version__

    out = run_cli(["--version"])
    assert out.returncode == 0 and f"visionkit {__version__}" in out.stdout


def test_plugins_list_json_shows_builtins_and_what_they_registered(run_cli) -> None:  # type: ignore[no-untyped-def]
    out = run_cli(["plugins", "list", "--json"])
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    by_name = {p["name"]: p for p in doc["plugins"]}
    assert doc["hookspec_version"] == HOOKSPEC_VERSION
    tv = by_name["visionkit_torchvision"]
    assert tv["builtin"] and tv["status"] == "loaded" and "visionkit_register_backbones" in tv["hooks"]
    assert "backbone visionkit:resnet18" in tv["registered"]
    assert "backbone timm:*" in by_name["visionkit_timm"]["registered"]


def test_models_list_static_and_lazy_namespaces(run_cli) -> None:  # type: ignore[no-untyped-def]
    out = run_cli(["models", "list"])
    assert out.returncode == 0, out.stderr
    assert "visionkit:resnet18" in out.stdout and "timm:*" in out.stdout
    out = run_cli(["models", "list", "--namespace", "timm", "--filter", "convnext_t*"])
    assert out.returncode == 0, out.stderr
    assert "timm:convnext_tiny" in out.stdout.split()
    assert all(line.startswith("timm:convnext_t") for line in out.stdout.splitlines())


def test_datasets_list(run_cli) -> None:  # type: ignore[no-untyped-def]
    out = run_cli(["datasets", "list"])
    assert out.returncode == 0
    assert "visionkit:digits" in out.stdout and "visionkit:imagefolder" in out.stdout


def test_config_show_round_trips(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = [
        "config",
        "show",
        "--epochs",
        "3",
        "--backbone",
        "timm:resnet10t",
        "--set",
        "backbone.drop_path_rate=0.1",
        "--logger",
        "csv",
        "--logger",
        "tensorboard",
        "--set",
        "trainer.gradient_clip_val=1.0",
    ]
    first = run_cli(args)
    assert first.returncode == 0, first.stderr
    cfg = yaml.safe_load(first.stdout)
    assert cfg["epochs"] == 3 and cfg["options"]["backbone"] == {"drop_path_rate": 0.1}
    (tmp_path / "run.yaml").write_text(first.stdout)
    second = run_cli(["config", "show", "--config", str(tmp_path / "run.yaml")])
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["train", "--backbone", "resnet19"], ["unknown backbone 'resnet19'", "resnet18"]),
        (["train", "--backbone", "timn:resnet18"], ["unknown backbone namespace 'timn'", "timm"]),
        (["train", "--data", "./no/such/folder"], ["no/such/folder", "not found"]),
        (["train", "--logger", "tensorbord"], ["unknown logger", "tensorboard"]),
        (["train", "--callback", "wandb-image"], ["unknown callback", "wandb-images"]),
        (["train", "--epochs", "-2"], ["--epochs must be at least 1"]),
        (
            ["train", "--set", "backbone.drop_path_rat=0.1", "--backbone", "timm:resnet10t"],
            ["drop_path_rate"],
        ),
        (["train", "--config", "missing.yaml"], ["missing.yaml", "not found"]),
        (["train", "--data", "nosuchdataset"], ["nosuchdataset", "digits"]),
        (["train", "--accelerator", "gpu", "--run-dir", "r"], ["Lightning rejected the trainer settings"]),
        (  # a convnet that downsamples 16 px below its kernels: the user's size, not our bug
            [
                "train",
                "--backbone",
                "timm:test_convnext",
                "--image-size",
                "16",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--set",
                "trainer.limit_train_batches=1",
                "--logger",
                "csv",
            ],
            ["--image-size 16 is too small for backbone 'timm:test_convnext'", "larger --image-size"],
        ),
    ],
)
def test_usage_errors_are_one_clear_line_with_exit_2(run_cli, args: list[str], needles: list[str]) -> None:  # type: ignore[no-untyped-def]
    out = run_cli(args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, out.stderr
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]


def test_debug_env_shows_the_traceback(run_cli) -> None:  # type: ignore[no-untyped-def]
    out = run_cli(["train", "--backbone", "resnet19"], env={"VISIONKIT_DEBUG": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_bad_flag_is_a_usage_error(run_cli) -> None:  # type: ignore[no-untyped-def]
    out = run_cli(["train", "--epochz", "3"])
    assert out.returncode == 2 and "--epochz" in out.stderr


def _complete(run_cli, words: str) -> list[str]:  # type: ignore[no-untyped-def]
    env = {
        "_VISIONKIT_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    out = run_cli([], env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_shell_completion_of_component_names(run_cli) -> None:  # type: ignore[no-untyped-def]
    assert _complete(run_cli, "visionkit train --backbone resnet1") == ["resnet101", "resnet152", "resnet18"]
    assert "timm:convnext_tiny" in _complete(run_cli, "visionkit train --backbone timm:convnext_t")
    assert {"csv", "tensorboard", "wandb"} <= set(_complete(run_cli, "visionkit train --logger "))
    assert "wandb-images" in _complete(run_cli, "visionkit train --callback wa")
    assert _complete(run_cli, "visionkit train --data dig") == ["digit-sets", "digits"]


def test_show_completion_prints_a_script(run_cli) -> None:  # type: ignore[no-untyped-def]
    out = run_cli(["--show-completion", "bash"])
    assert out.returncode == 0 and "_VISIONKIT_COMPLETE" in out.stdout
