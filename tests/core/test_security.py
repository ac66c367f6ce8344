"""Untrusted checkpoints never run code; API keys end up nowhere; usage errors are one line, exit 2."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cli_server
import pytest
import torch
from conftest import make_image_tree
from test_plugin_isolation import install_fake

from visionkit_core.run.config import REDACTED
from visionkit_core.training.checkpoint import safe_load

# Fake 40-hex-character keys, one per place a key can come from.
ENV_KEY = "a1b2c3d4e5" * 4  # WANDB_API_KEY
NETRC_KEY = "f9e8d7c6b5" * 4  # ~/.netrc, as `wandb login` writes it
OPTION_KEY = "0123456789" * 4  # --set backbone.api_key=... (a plugin option)
KEYS = (ENV_KEY, NETRC_KEY, OPTION_KEY)

# A plugin whose backbone takes a credential, and a "trusted instantiator" a checkpoint may name.
KEYED_PLUGIN = """
@hookimpl
def visionkit_register_backbones(registry):
    registry.add("keynet", "vkfake_keyed:keynet")


def keynet(num_classes, pretrained=False, api_key=None):
    import torch

    return torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, num_classes)
    )


def instantiate(*args, **kwargs):
    pathlib.Path(os.environ["VK_MARKER"]).touch()
"""


class Payload:
    """Unpickling this runs ``io.open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (io.open, (str(self.marker), "w"))


UNSAFE_GLOBAL = f"{io.open.__module__}.{io.open.__qualname__}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("security")
    site = root / "site"
    install_fake(site, "keyed", KEYED_PLUGIN)
    home = root / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {NETRC_KEY}\n")
    (home / ".netrc").chmod(0o600)
    variables = {
        **os.environ,
        "PYTHONPATH": str(site),
        "HOME": str(home),
        "WANDB_API_KEY": ENV_KEY,
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "VK_MARKER": str(root / "instantiated"),
        "VISIONKIT_DEBUG": "",
    }
    return {
        "root": root,
        "home": home,
        "vars": variables,
        "data": make_image_tree(root / "data", ["cat", "dog"], 6),
    }


def cli(env: dict[str, Any], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``visionkit ARGS`` as a process of its own, forked by the shared CLI server (tests/cli_server.py)."""
    return cli_server.visionkit(*args, cwd=env["root"], env={**env["vars"], **extra})


@pytest.fixture(scope="module")
def run(env: dict[str, Any]) -> dict[str, Any]:
    """One run with wandb (offline), wandb-images and a credential passed as a plugin option."""
    out = cli(
        env,
        "train",
        "--data",
        str(env["data"]),
        "--backbone",
        "keyed:keynet",
        "--set",
        f"backbone.api_key={OPTION_KEY}",
        "--logger",
        "csv",
        "--logger",
        "wandb",
        "--callback",
        "wandb-images",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--run-dir",
        "run",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = env["root"] / "run"
    return {"out": out, "dir": run_dir, "ckpt": run_dir / "checkpoints" / "last.ckpt"}


# -- secrets ----------------------------------------------------------------------------------


def test_api_keys_appear_in_no_output_and_no_file_of_the_run(
    env: dict[str, Any], run: dict[str, Any]
) -> None:
    files = [p for p in run["dir"].rglob("*") if p.is_file() and not p.is_symlink()]
    names = {p.name for p in files}
    assert {"config.yaml", "hparams.yaml", "summary.json", "last.ckpt"} <= names
    assert any(p.suffix == ".wandb" for p in files) and any(p.parent.name == "logs" for p in files)
    leaks = [
        (str(p), key)
        for p in [*files, *(p for p in env["home"].rglob("*") if p.is_file() and p.name != ".netrc")]
        for key in KEYS
        if key.encode() in p.read_bytes()
    ]
    leaks += [
        (stream, key) for stream in ("stdout", "stderr") for key in KEYS if key in getattr(run["out"], stream)
    ]
    assert not leaks


def test_a_secret_option_is_redacted_in_config_hparams_and_checkpoint(run: dict[str, Any]) -> None:
    config = (run["dir"] / "config.yaml").read_text()
    hparams = (run["dir"] / "hparams.yaml").read_text()
    assert f"api_key: {REDACTED}" in config and f"api_key: {REDACTED}" in hparams
    ckpt = safe_load(run["ckpt"])
    assert ckpt["visionkit"]["config"]["options"]["backbone"]["api_key"] == REDACTED
    assert ckpt["hyper_parameters"]["backbone_options"]["api_key"] == REDACTED


def test_a_rejected_secret_option_is_named_but_its_value_is_not_echoed(env: dict[str, Any]) -> None:
    out = cli(env, "train", "--logger", "wandb", "--set", f"logger.wandb.api_key={OPTION_KEY}")
    assert out.returncode == 2 and "api_key" in error_line(out)
    assert OPTION_KEY not in out.stderr + out.stdout


# -- untrusted checkpoints ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def evil(env: dict[str, Any], run: dict[str, Any]) -> dict[str, Path]:
    """A real visionkit checkpoint plus an entry whose unpickling creates a marker file."""
    marker = env["root"] / "pwned"
    ckpt = safe_load(run["ckpt"])
    ckpt["payload"] = Payload(marker)
    path = env["root"] / "evil.ckpt"
    torch.save(ckpt, path)
    # the payload is real: an unsafe load runs it
    subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"], check=True
    )
    assert marker.exists()
    marker.unlink()
    return {"ckpt": path, "marker": marker}


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "--ckpt", "{ckpt}", "{data}/val"],
        ["validate", "--ckpt", "{ckpt}"],
        ["test", "--ckpt", "{ckpt}"],
        ["export", "--ckpt", "{ckpt}", "--format", "torchscript", "--output", "{root}/m.pt"],
        ["train", "--resume", "{ckpt}", "--epochs", "2"],
    ],
    ids=lambda c: c[0],
)
def test_a_checkpoint_with_a_pickle_payload_is_refused_by_every_command(
    env: dict[str, Any], evil: dict[str, Path], command: list[str]
) -> None:
    fields = {"ckpt": evil["ckpt"], "data": env["data"], "root": env["root"]}
    out = cli(env, *[arg.format(**fields) for arg in command], TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    assert out.returncode == 2, out.stderr[-3000:]
    line = error_line(out)
    assert f"unsafe global {UNSAFE_GLOBAL!r}" in line and str(evil["ckpt"]) in line, line
    assert not evil["marker"].exists()


def test_the_trainer_checkpoint_io_refuses_it_too(
    evil: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``trainer.fit(ckpt_path=...)`` loads through, even with the opt-out variable set."""
    from visionkit_core.errors import CheckpointError
    from visionkit_core.training.checkpoint_io import AtomicCheckpointIO

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match=f"unsafe global '{UNSAFE_GLOBAL}'"):
        AtomicCheckpointIO().load_checkpoint(evil["ckpt"], weights_only=False)
    assert not evil["marker"].exists()


def test_lightning_instantiator_hyperparameters_are_never_honoured(
    env: dict[str, Any], run: dict[str, Any]
) -> None:
    ckpt = safe_load(run["ckpt"])
    ckpt["hyper_parameters"]["_instantiator"] = "vkfake_keyed.instantiate"
    ckpt["hyper_parameters"]["_class_path"] = "vkfake_keyed.keynet"
    path = env["root"] / "instantiator.ckpt"
    torch.save(ckpt, path)
    out = cli(env, "predict", "--ckpt", str(path), str(env["data"] / "val" / "cat"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert not Path(env["vars"]["VK_MARKER"]).exists()


# -- usage errors -----------------------------------------------------------------------------


def error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, out.stderr[-3000:]
    return lines[0]


def test_bad_yaml_config_is_one_line_naming_the_file(env: dict[str, Any]) -> None:
    bad = env["root"] / "bad.yaml"
    bad.write_text("epochs: 3\nlr: [0.1\n")
    out = cli(env, "train", "--config", str(bad))
    assert out.returncode == 2
    assert "bad.yaml" in error_line(out)
    assert "Traceback" in cli(env, "train", "--config", str(bad), VISIONKIT_DEBUG="1").stderr


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d, "is a directory"),
        (
            lambda d: torch.save(torch.zeros(3), d / "tensor.ckpt") or d / "tensor.ckpt",
            "not a checkpoint dict",
        ),
        (
            lambda d: torch.save({"state_dict": {}}, d / "plain.ckpt") or d / "plain.ckpt",
            "not a visionkit checkpoint",
        ),
    ],
    ids=["directory", "tensor", "foreign-dict"],
)
def test_a_bad_ckpt_is_one_line_with_exit_2(
    env: dict[str, Any], tmp_path: Path, make: Any, needle: str
) -> None:
    ckpt = make(tmp_path)
    out = cli(env, "export", "--ckpt", str(ckpt), "--format", "onnx")
    assert out.returncode == 2
    line = error_line(out)
    assert needle in line and str(ckpt) in line, line
