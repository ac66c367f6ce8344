"""Hook implementations of the built-in visionkit_loggers plugin: csv, tensorboard, wandb.

Factories are registered as ``"module:attr"`` strings, so listing loggers imports neither
Lightning nor wandb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from visionkit_core import Registrar


@hookimpl
def visionkit_register_loggers(registry: Registrar) -> None:
    """Register the csv, tensorboard and wandb loggers (all write inside the run directory)."""
    registry.add(
        "csv",
        "visionkit_loggers.local:csv_logger",
        description="metrics.csv and hparams.yaml in the run directory",
    )
    registry.add(
        "tensorboard",
        "visionkit_loggers.local:tensorboard_logger",
        description="TensorBoard event files in <run_dir>/tensorboard",
    )
    registry.add(
        "wandb",
        "visionkit_loggers.wandb_logger:wandb_logger",
        description="Weights & Biases; offline (sync later) when no API key is configured",
    )
