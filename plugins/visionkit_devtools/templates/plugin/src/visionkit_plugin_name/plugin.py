"""Hook implementations of the plugin_name plugin: what the ``visionkit`` entry point loads.

Keep this module cheap to import: it runs for every ``visionkit`` command, ``--help``
included. Register factories as ``"module:attr"`` strings; heavy code lives in
``visionkit_plugin_name.components``. A hook may accept only some of its arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from visionkit_core import Registrar
    from visionkit_core.run.config import RunConfig

_COMPONENTS = "visionkit_plugin_name.components"


@hookimpl
def visionkit_register_backbones(registry: Registrar) -> None:
    """Backbones: ``registry.add("tinynet", ...)`` registers ``plugin_name:tinynet``."""
    registry.add("tinynet", f"{_COMPONENTS}:tinynet", description="a tiny CNN (option: width)")


@hookimpl
def visionkit_register_tasks(registry: Registrar) -> None:
    """Tasks: LightningModules that declare a ``TaskSpec`` (``--task plugin_name:smooth-classifier``)."""
    registry.add(
        "smooth-classifier", f"{_COMPONENTS}:SmoothClassifier", description="classifier, label smoothing"
    )


@hookimpl
def visionkit_register_datasets(registry: Registrar) -> None:
    """Datasets: LightningDataModule factories (``--data plugin_name:toy``)."""
    registry.add("toy", f"{_COMPONENTS}:ToyDataModule", description="random dark/bright images, no files")


@hookimpl
def visionkit_register_callbacks(registry: Registrar) -> None:
    """Callbacks, selected with ``--callback plugin_name:epoch-file``."""
    registry.add("epoch-file", f"{_COMPONENTS}:EpochFile", description="writes finished epochs to a file")


@hookimpl
def visionkit_register_loggers(registry: Registrar) -> None:
    """Loggers, selected with ``--logger plugin_name:jsonl``."""
    registry.add("jsonl", f"{_COMPONENTS}:JsonLinesLogger", description="metrics as JSON lines")


@hookimpl
def visionkit_claim_data(path: Path) -> str | None:
    """``--data PATH``: claim the layouts your datasets read (cheaply: look, do not decode).

    Here a folder holding a ``plugin_name-toy.txt`` marker file is the toy dataset.
    """
    return "plugin_name:toy" if path.is_dir() and (path / "plugin_name-toy.txt").is_file() else None


@hookimpl
def visionkit_add_commands(app: typer.Typer) -> None:
    """CLI sub-commands: ``visionkit plugin_name-hello``. Import heavy things inside the command.

    Typer reads the annotations when the CLI starts, so the names they use (``Annotated``,
    ``typer``) must be importable from this module's globals, not only inside the hook.
    """

    @app.command("plugin_name-hello")
    def hello(name: Annotated[str, typer.Option(help="Who to greet.")] = "world") -> None:
        """Say hello from the plugin_name plugin."""
        typer.echo(f"Hello, {name}! (from visionkit-plugin-name)")


@hookimpl
def visionkit_configure_trainer(trainer_kwargs: dict[str, Any], run: RunConfig) -> None:
    """Adjust ``lightning.Trainer`` arguments, here only for runs that use our backbones."""
    if (run.backbone or "").startswith("plugin_name:"):
        trainer_kwargs.setdefault("gradient_clip_val", 1.0)
