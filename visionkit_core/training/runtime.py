"""Small run-time helpers for assembled runs (imports Lightning; never imported by the CLI at start)."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from visionkit_core.training.checkpoint import META_KEY


def batch_size_of(batch: Any) -> int:
    """Images in a batch: the length of its images (a tensor, or a list of variable-size images)."""
    if isinstance(batch, dict):
        first = batch.get("image", batch.get("images"))
    elif isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
    else:
        first = batch
    if isinstance(first, torch.Tensor):
        return int(first.shape[0]) if first.ndim else 1
    return len(first) if isinstance(first, (list, tuple)) else 0


class RunMetadata(Callback):
    """Write the run's ``"visionkit"`` metadata into every checkpoint (the core does it, for any task),
    and keep its hyperparameters plain (a plugin's ``Path`` would break safe loading)."""

    HPARAMS = ("hyper_parameters", "datamodule_hyper_parameters")

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = plain(meta)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        for key in self.HPARAMS:
            if key in checkpoint:
                checkpoint[key] = plain(dict(checkpoint[key]))
        checkpoint[META_KEY] = dict(self.meta)


_PLAIN = (str, int, float, bool, type(None))


def plain(obj: Any) -> Any:
    """``obj`` with paths turned into strings and anything else non-plain into its ``repr``,
    so a checkpoint's metadata always loads with ``weights_only=True``."""
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return type(obj)(plain(v) for v in obj)
    return tuple(plain(v) for v in obj) if isinstance(obj, tuple) else repr(obj)


#: Notices that are expected in every visionkit run and tell the user nothing actionable.
_EXPECTED_WARNINGS = (
    r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The '\w+_dataloader' does not have many workers",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"torch.distributed.nn.functional.all_gather is deprecated",
)


def quiet_lightning() -> None:
    """Silence Lightning's advertising tip and the notices visionkit's own design triggers."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: "💡 Tip" not in record.getMessage())
    for pattern in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
