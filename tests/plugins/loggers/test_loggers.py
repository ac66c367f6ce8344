"""The csv, tensorboard and wandb loggers: where their files land, offline wandb, no leaked API key."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from visionkit_loggers.wandb_logger import offline_message, resolve_mode, wandb_logger

from visionkit_core.errors import ConfigError
from visionkit_core.plugin.manager import load_plugins
from visionkit_core.run.build import call_with_accepted
from visionkit_core.run.config import check_options

FAKE_KEY = "abcdef0123456789abcdef0123456789abcdef01"
LOGGER_PLUGINS = ("visionkit_loggers.plugin", "visionkit_wandb_images.plugin", "visionkit_callbacks.plugin")


class TinyClassifier(L.LightningModule):
    """Two classes of 8x8 RGB uint8 images, normalised on the device like visionkit's tasks."""

    def __init__(self, class_names: tuple[str, ...] = ("dark", "bright"), lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, len(class_names)))

    def on_after_batch_transfer(self, batch, dataloader_idx):
        images, labels = batch
        return (images.float() / 255.0 - 0.5) / 0.25, labels

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        return images * 0.25 + 0.5

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _shared_step(self, batch):
        images, labels = batch
        logits = self(images)
        return F.cross_entropy(logits, labels), (logits.argmax(dim=1) == labels).float().mean()

    def training_step(self, batch, batch_idx):
        loss, _ = self._shared_step(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self._shared_step(batch)
        self.log("val/loss", loss)
        self.log("val/acc", acc, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def tiny_loaders(n: int = 32) -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127.5).long()
    data = TensorDataset(images, labels)
    return DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=8)


def tiny_fit(run_dir: Path, loggers, callbacks=(), epochs: int = 1) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=loggers,
        callbacks=list(callbacks),
        default_root_dir=run_dir,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    train, val = tiny_loaders()
    trainer.fit(TinyClassifier(), train, val)
    return trainer


def build(kind: str, name: str, run_dir: Path, **options):
    """Build a component the way the assembler does: resolve, check options, call the factory."""
    comp = load_plugins(builtins=LOGGER_PLUGINS, autoload=False, strict=True).registry.resolve(kind, name)
    factory = comp.load()
    reserved = {"run_dir": "--run-dir", "run_name": "--run-dir", "class_names": "the dataset"}
    check_options(kind, comp.qualname, factory, options, reserved)
    provided = {"run_dir": run_dir, "run_name": run_dir.name, "class_names": ["dark", "bright"]}
    return call_with_accepted(factory, provided, options)


# -- registration ---------------------------------------------------------------------


def test_plugin_modules_import_nothing_heavy():
    code = (
        "import sys, visionkit_loggers.plugin, visionkit_callbacks.plugin, visionkit_wandb_images.plugin;"
        "print(sorted(m for m in ('torch', 'lightning', 'wandb', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loggers_are_registered_as_bare_builtin_names():
    registry = load_plugins(builtins=LOGGER_PLUGINS, autoload=False, strict=True).registry
    names = sorted(c.qualname for c in registry.listing("logger"))
    assert names == ["visionkit:csv", "visionkit:tensorboard", "visionkit:wandb"]


def test_unknown_logger_option_is_rejected_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'project'"):
        build("logger", "wandb", tmp_path, projct="x")


# -- csv ------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_logger_writes_metrics_csv_directly_in_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    tiny_fit(run_dir, [build("logger", "csv", run_dir)])
    rows = read_csv(run_dir / "metrics.csv")
    assert [float(r["val/acc"]) for r in rows if r["val/acc"]], "val/acc was not logged"
    assert "class_names" in (run_dir / "hparams.yaml").read_text()
    assert not list(run_dir.glob("**/version_*"))


def test_csv_logger_appends_to_an_existing_metrics_csv_without_warning(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("epochs: 1\n")  # what the assembler writes first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_fit(run_dir, [build("logger", "csv", run_dir)])
    assert not [w for w in caught if "not empty" in str(w.message)]
    first = read_csv(run_dir / "metrics.csv")
    tiny_fit(run_dir, [build("logger", "csv", run_dir)])  # a resumed run reuses the run dir
    assert len(read_csv(run_dir / "metrics.csv")) == 2 * len(first)


# -- tensorboard ----------------------------------------------------------------------


def test_tensorboard_logger_writes_events_and_prediction_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    trainer = tiny_fit(
        run_dir, [build("logger", "tensorboard", run_dir)], [build("callback", "wandb-images", run_dir)]
    )
    tb_dir = run_dir / "tensorboard"
    assert list(tb_dir.glob("events.out.tfevents.*")), "no event file directly in run_dir/tensorboard"
    events = EventAccumulator(str(tb_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert "val/predictions" in events.Tags()["images"]
    # one image per epoch, none from the sanity check (which runs at step 0)
    assert [event.step for event in events.Images("val/predictions")] == [trainer.global_step]
    assert "val/acc" in events.Tags()["scalars"]
    assert "hp_metric" not in events.Tags()["scalars"]


# -- wandb ----------------------------------------------------------------------------


def wandb_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A wandb environment confined to tmp_path: no real credentials, no writes to $HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        NETRC=str(tmp_path / "no-netrc"),
        WANDB_SILENT="true",
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
        WANDB_ARTIFACT_DIR=str(tmp_path / "wandb-artifacts"),
    )
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def offline_wandb_run(tmp_path_factory):
    """A real fit with the wandb logger and wandb-images, in a fresh process (wandb keeps global state)."""
    tmp_path = tmp_path_factory.mktemp("wandb")
    run_dir = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from test_loggers import build, tiny_fit
        from visionkit_loggers.wandb_logger import finish_loggers
        run_dir = Path({str(run_dir)!r})
        loggers = [build("logger", "wandb", run_dir)]
        try:
            tiny_fit(run_dir, loggers, [build("callback", "wandb-images", run_dir)])
        finally:
            finish_loggers(loggers)
        import os
        print("WANDB_MODE after fit:", os.environ.get("WANDB_MODE"))
        """
    )
    env = wandb_env(tmp_path, WANDB_API_KEY=FAKE_KEY, WANDB_MODE="offline")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


def test_wandb_offline_run_holds_the_logged_prediction_images(offline_wandb_run):
    run_dir, _ = offline_wandb_run
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    pngs = list((runs[0] / "files" / "media" / "images").rglob("*.png"))
    assert pngs, "no image files in the offline run"
    assert (runs[0] / f"run-{runs[0].name.rsplit('-', 1)[-1]}.wandb").stat().st_size > 0


def test_wandb_offline_message_is_printed_once(offline_wandb_run):
    run_dir, proc = offline_wandb_run
    output = proc.stdout + proc.stderr
    assert output.count("visionkit: wandb logs offline") == 1
    assert f"wandb sync {(run_dir / 'wandb').resolve()}/offline-run-*" in output


def test_wandb_api_key_is_written_nowhere(offline_wandb_run):
    run_dir, proc = offline_wandb_run
    leaks = [p for p in run_dir.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert leaks == []
    assert FAKE_KEY not in proc.stdout + proc.stderr


def test_wandb_logger_leaves_the_process_environment_alone(offline_wandb_run):
    _, proc = offline_wandb_run
    assert "WANDB_MODE after fit: offline" in proc.stdout  # WandbLogger(offline=True) sets "dryrun"


def test_wandb_logger_config_holds_no_key(tmp_path, monkeypatch):
    for key, value in wandb_env(tmp_path, WANDB_API_KEY=FAKE_KEY, WANDB_MODE="offline").items():
        monkeypatch.setenv(key, value)
    logger = wandb_logger(tmp_path, "run-1", project="p", tags="a, b")
    init = logger._wandb_init
    assert FAKE_KEY not in json.dumps(init, default=str)
    assert init["mode"] == "offline" and init["tags"] == ["a", "b"] and init["name"] == "run-1"
    assert init["dir"] == str(tmp_path) and "anonymous" not in init


@pytest.mark.parametrize(
    ("env", "offline", "expected"),
    [
        ({}, None, "offline"),
        ({"WANDB_API_KEY": FAKE_KEY}, None, "online"),
        ({"WANDB_API_KEY": "  "}, None, "offline"),
        ({"WANDB_API_KEY": FAKE_KEY, "WANDB_MODE": "offline"}, None, "offline"),
        ({"WANDB_MODE": "online"}, None, "online"),
        ({"WANDB_MODE": "disabled"}, None, "disabled"),
        ({"WANDB_API_KEY": FAKE_KEY}, True, "offline"),
        ({}, False, "online"),
    ],
)
def test_wandb_mode_follows_credentials_env_and_option(tmp_path, env, offline, expected):
    environ = {"NETRC": str(tmp_path / "missing"), **env}
    assert resolve_mode(offline, environ)[0] == expected


def test_a_netrc_entry_for_the_wandb_host_counts_as_credentials(tmp_path):
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    assert resolve_mode(None, {"NETRC": str(netrc_file)}) == ("online", "")
    other_host = {"NETRC": str(netrc_file), "WANDB_BASE_URL": "https://wandb.example.com"}
    assert resolve_mode(None, other_host) == ("offline", "no W&B API key found")


def test_offline_message_says_why_where_and_how_to_sync(tmp_path):
    message = offline_message(tmp_path, "no W&B API key found")
    assert "offline (no W&B API key found)" in message
    assert f"wandb sync {tmp_path.resolve() / 'wandb'}/offline-run-*" in message
