"""Hook implementations of the built-in visionkit_loggers plugin: csv, tensorboard, wandb.

Factories are registered as ``"module:attr"`` strings, so listing loggers imports neither
Lightning nor wandb. All three write inside the run directory.
"""

from __future__ import annotations

from visionkit_core.kit.registration import Entry, loggers

visionkit_register_loggers = loggers(
    Entry("csv", "visionkit_loggers.local:csv_logger", "metrics.csv and hparams.yaml in the run directory"),
    Entry(
        "tensorboard",
        "visionkit_loggers.local:tensorboard_logger",
        "TensorBoard event files in <run_dir>/tensorboard",
    ),
    Entry(
        "wandb",
        "visionkit_loggers.wandb_logger:wandb_logger",
        "Weights & Biases; offline (sync later) when no API key is configured",
    ),
)
