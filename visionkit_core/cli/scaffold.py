"""``visionkit plugins new``: write a ready-to-install plugin package skeleton.

The skeleton is a complete distribution (``pyproject.toml`` with the ``visionkit`` entry
point, a plugin module with one implementation of every hook, the components it registers,
a README and a passing test). Templates are ``string.Template`` text (``$name``), so the
Python code in them needs no brace escaping. Importing this module is cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from visionkit_core.errors import UsageError

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*[a-z0-9]$")
#: Plugin names whose package would shadow visionkit's own (``visionkit_<name>``).
_RESERVED = {
    "core",
    "visionkit",
    "torchvision",
    "timm",
    "classification",
    "imagefolder",
    "loggers",
    "callbacks",
    "wandb_images",
}


@dataclass(frozen=True)
class PluginNames:
    """The names one plugin is known by."""

    name: str  # entry-point name = plugin name = default namespace, e.g. "acme"
    package: str  # import package, e.g. "visionkit_acme"
    distribution: str  # pip name, e.g. "visionkit-acme"


def plugin_names(name: str) -> PluginNames:
    """Validate ``name`` and derive the package and distribution names from it."""
    raw = name.strip()
    bare = re.sub(r"^visionkit[-_]", "", raw.lower())
    if not _NAME_RE.match(bare):
        raise UsageError(
            f"invalid plugin name {raw!r}: use 2+ lowercase letters, digits, '-' or '_', starting "
            "with a letter, e.g. 'acme' (the package becomes visionkit_acme, the namespace acme)"
        )
    if bare.replace("-", "_") in _RESERVED:
        raise UsageError(f"plugin name {bare!r} is taken by visionkit itself; choose another name")
    return PluginNames(bare, "visionkit_" + bare.replace("-", "_"), "visionkit-" + bare.replace("_", "-"))


def write_plugin(name: str, parent: Path) -> Path:
    """Write the skeleton for plugin ``name`` into ``parent/<distribution>``; return that folder."""
    from visionkit_core import HOOKSPEC_VERSION, __version__

    names = plugin_names(name)
    root = Path(parent) / names.distribution
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{str(root)!r} already exists and is not empty; choose another --dir or name")
    values = {
        "name": names.name,
        "package": names.package,
        "dist": names.distribution,
        "visionkit_version": __version__,
        "hookspec_version": HOOKSPEC_VERSION,
    }
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"src/{names.package}/__init__.py": INIT,
        f"src/{names.package}/plugin.py": PLUGIN,
        f"src/{names.package}/components.py": COMPONENTS,
        "tests/test_plugin.py": TEST,
    }
    try:
        for rel, template in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(template).substitute(values), encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot write the plugin into {str(root)!r}: {err.strerror or err}") from None
    return root


PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "A visionkit plugin: $name"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["visionkit>=$visionkit_version"]

# This table makes the package a visionkit plugin. The entry-point name ("$name") is the
# plugin's name and its default namespace; the value is the module with the hookimpls.
[project.entry-points.visionkit]
$name = "$package.plugin"

[project.optional-dependencies]
test = ["pytest>=8"]

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

README = """\
# $dist

A [visionkit](https://pypi.org/project/visionkit/) plugin (written against hookspec
$hookspec_version). It registers, in the namespace `$name`:

- backbone `$name:tinynet`, task `$name:smooth-classifier`, dataset `$name:toy`,
  callback `$name:epoch-file`, logger `$name:jsonl`;
- the command `visionkit $name-hello`;
- a `visionkit_configure_trainer` hook that clips gradients for runs using `$name:` backbones.

```bash
pip install -e ".[test]"
visionkit plugins list                 # shows $name, its hooks and what it registered
visionkit train --backbone $name:tinynet --data $name:toy --epochs 1 \\
    --callback $name:epoch-file --logger $name:jsonl --logger csv
pytest
```

`src/$package/plugin.py` holds the hook implementations and must stay cheap to import
(no torch at module level): it registers factories as `"module:attr"` strings, and
`src/$package/components.py` (imported only when a run builds a component) holds the code.
"""

INIT = '''\
"""$dist: a visionkit plugin (namespace ``$name``)."""

__version__ = "0.1.0"
'''

PLUGIN = '''\
"""Hook implementations of the $name plugin: what the ``visionkit`` entry point loads.

Keep this module cheap to import: it runs for every ``visionkit`` command, ``--help``
included. Register factories as ``"module:attr"`` strings; heavy code lives in
``$package.components``. A hook may accept only some of its arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from visionkit_core import hookimpl

if TYPE_CHECKING:
    from visionkit_core import Registrar
    from visionkit_core.run.config import RunConfig

_COMPONENTS = "$package.components"


@hookimpl
def visionkit_register_backbones(registry: Registrar) -> None:
    """Backbones: ``registry.add("tinynet", ...)`` registers ``$name:tinynet``."""
    registry.add("tinynet", f"{_COMPONENTS}:tinynet", description="a tiny CNN (option: width)")


@hookimpl
def visionkit_register_tasks(registry: Registrar) -> None:
    """Tasks: LightningModule factories that wrap a backbone."""
    registry.add(
        "smooth-classifier", f"{_COMPONENTS}:smooth_classifier", description="classifier, label smoothing"
    )


@hookimpl
def visionkit_register_datasets(registry: Registrar) -> None:
    """Datasets: LightningDataModule factories (``--data $name:toy``)."""
    registry.add("toy", f"{_COMPONENTS}:ToyDataModule", description="random dark/bright images, no files")


@hookimpl
def visionkit_register_callbacks(registry: Registrar) -> None:
    """Callbacks, selected with ``--callback $name:epoch-file``."""
    registry.add("epoch-file", f"{_COMPONENTS}:EpochFile", description="writes finished epochs to a file")


@hookimpl
def visionkit_register_loggers(registry: Registrar) -> None:
    """Loggers, selected with ``--logger $name:jsonl``."""
    registry.add("jsonl", f"{_COMPONENTS}:JsonLinesLogger", description="metrics as JSON lines")


@hookimpl
def visionkit_add_commands(app: typer.Typer) -> None:
    """CLI sub-commands: ``visionkit $name-hello``. Import heavy things inside the command.

    Typer reads the annotations when the CLI starts, so the names they use (``Annotated``,
    ``typer``) must be importable from this module's globals, not only inside the hook.
    """

    @app.command("$name-hello")
    def hello(name: Annotated[str, typer.Option(help="Who to greet.")] = "world") -> None:
        """Say hello from the $name plugin."""
        typer.echo(f"Hello, {name}! (from $dist)")


@hookimpl
def visionkit_configure_trainer(trainer_kwargs: dict[str, Any], run: RunConfig) -> None:
    """Adjust ``lightning.Trainer`` arguments, here only for runs that use our backbones."""
    if run.backbone.startswith("$name:"):
        trainer_kwargs.setdefault("gradient_clip_val", 1.0)
'''

COMPONENTS = '''\
"""The components the $name plugin registers. Imported only when a run builds one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def tinynet(*, num_classes: int, pretrained: bool = False, width: int = 16) -> nn.Module:
    """Backbone: ``(N, 3, H, W)`` float images -> ``(N, num_classes)`` logits."""
    if pretrained:
        from visionkit_core import UsageError

        raise UsageError("$name:tinynet has no pretrained weights; drop --pretrained")
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )  # fmt: skip


def smooth_classifier(*, label_smoothing: float = 0.1, **kwargs: Any) -> L.LightningModule:
    """Task: visionkit's image classifier with label smoothing on; replace with your own module."""
    from visionkit_classification.model import ImageClassifier

    return ImageClassifier(label_smoothing=label_smoothing, **kwargs)


class ToyDataModule(L.LightningDataModule):
    """Dataset: two classes of random uint8 images, dark and bright (batches stay uint8)."""

    def __init__(
        self, batch_size: int = 32, image_size: int | None = None, seed: int = 42, size: int = 128
    ) -> None:
        super().__init__()
        self.batch_size, self.seed, self.size = batch_size, seed, size
        self.image_size = image_size or 32  # visionkit reads this attribute

    def class_names(self) -> list[str]:
        """Called before setup(): must be cheap."""
        return ["dark", "bright"]

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(self.seed)
        labels = torch.arange(self.size) % 2
        s = self.image_size
        images = torch.randint(0, 128, (self.size, 3, s, s), generator=g, dtype=torch.uint8)
        images += (labels * 127).to(torch.uint8).view(-1, 1, 1, 1)
        cut = self.size * 3 // 4
        self.train_set = TensorDataset(images[:cut], labels[:cut])
        self.val_set = TensorDataset(images[cut:], labels[cut:])

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_set, batch_size=self.batch_size)


class EpochFile(L.Callback):
    """Callback: appends each finished epoch to ``<run_dir>/<filename>`` (visionkit passes run_dir)."""

    def __init__(self, run_dir: Path, filename: str = "$name-epochs.txt") -> None:
        self.path = Path(run_dir) / filename

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{trainer.current_epoch}\\n")


class JsonLinesLogger(Logger):
    """Logger: one JSON line per ``log_metrics`` call in ``<run_dir>/$name-metrics.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.path = Path(run_dir) / "$name-metrics.jsonl"

    @property
    def name(self) -> str:
        return "$name"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\\n")
'''

TEST = '''\
"""Tests of the $name plugin: registration (no torch), the backbone, and a real CLI run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from visionkit_core.plugin.manager import load_plugins

from $package import plugin


def test_the_plugin_registers_its_components() -> None:
    plugins = load_plugins(builtins=(), autoload=False, extra=[("$name", plugin)])
    registry = plugins.registry
    assert not plugins.failed, [info.errors for info in plugins.failed]
    for kind, qualname in [
        ("backbone", "$name:tinynet"),
        ("task", "$name:smooth-classifier"),
        ("dataset", "$name:toy"),
        ("callback", "$name:epoch-file"),
        ("logger", "$name:jsonl"),
    ]:
        assert registry.resolve(kind, qualname).qualname == qualname


def test_the_backbone_maps_images_to_logits() -> None:
    import torch

    from $package.components import tinynet

    assert tinynet(num_classes=3)(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_installed_plugin_trains_one_epoch(tmp_path: Path) -> None:
    """Needs the package installed (``pip install -e .``): runs the real ``visionkit`` CLI."""
    env = {**os.environ, "VISIONKIT_STRICT_PLUGINS": "1", "WANDB_MODE": "offline"}
    args = ["train", "--backbone", "$name:tinynet", "--data", "$name:toy", "--epochs", "1",
            "--task", "$name:smooth-classifier", "--callback", "$name:epoch-file",
            "--logger", "$name:jsonl", "--run-dir", str(tmp_path / "run")]  # fmt: skip
    cmd = [sys.executable, "-m", "visionkit_core", *args]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["backbone"] == "$name:tinynet" and summary["epochs"] == 1
    assert (tmp_path / "run" / "$name-epochs.txt").read_text() == "0\\n"
    assert (tmp_path / "run" / "$name-metrics.jsonl").is_file()
'''
