"""The hook implementations: what the ``visionkit`` entry point of this distribution loads.

Everything here is cheap: factories are ``"module:attr"`` strings, so ``visionkit --help``
and ``visionkit plugins list`` never import torch because of this plugin. Registrations go
to the plugin's default namespace, which is its entry-point name: ``example``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visionkit_core import hookimpl

if TYPE_CHECKING:
    import typer

    from visionkit_core import Registrar


@hookimpl
def visionkit_register_backbones(registry: Registrar) -> None:
    """``example:tinynet``: a three-convolution network, fast on a CPU."""
    registry.add(
        "tinynet", "visionkit_example.backbone:tinynet", description="tiny 3-layer CNN (width option)"
    )


@hookimpl
def visionkit_register_datasets(registry: Registrar) -> None:
    """``example:shapes``: synthetic circles, squares and triangles, generated on first use."""
    registry.add(
        "shapes",
        "visionkit_example.data:ShapesDataModule",
        description="synthetic circles/squares/triangles (32 px), cached as an ImageFolder tree",
    )


@hookimpl
def visionkit_register_callbacks(registry: Registrar) -> None:
    """``example:record-epochs``: writes the epochs it saw to ``<run_dir>/example_callback.json``."""
    registry.add(
        "record-epochs", "visionkit_example.callback:EpochRecorder", description="records epochs to JSON"
    )


@hookimpl
def visionkit_register_loggers(registry: Registrar) -> None:
    """``example:jsonl``: metrics as JSON lines in ``<run_dir>/example_metrics.jsonl``."""
    registry.add("jsonl", "visionkit_example.logger:JsonLinesLogger", description="metrics as JSON lines")


@hookimpl
def visionkit_add_commands(app: typer.Typer) -> None:
    """``visionkit example-hello``: the command's module is imported only when it runs."""
    from visionkit_example.commands import hello

    app.command("example-hello")(hello)


@hookimpl
def visionkit_configure_trainer(trainer_kwargs: dict[str, Any]) -> None:
    """Tell our callback the epoch budget (so its JSON shows this hook ran).

    This implements only ``trainer_kwargs`` of ``visionkit_configure_trainer(trainer_kwargs,
    run)``: pluggy passes an implementation just the arguments it names.
    """
    for callback in trainer_kwargs.get("callbacks", []):
        if hasattr(callback, "configured"):
            callback.configured["max_epochs"] = trainer_kwargs.get("max_epochs")
