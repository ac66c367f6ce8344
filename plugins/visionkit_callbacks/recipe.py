"""The Lightning callbacks of the training-recipe flags: ``--ema`` and ``--freeze-backbone``.

Added to a fit's Trainer by this plugin's ``visionkit_configure_trainer``.

- ``--ema [--ema-decay D]``: Lightning's ``EMAWeightAveraging``. Validation runs on the
  averaged weights, and every checkpoint's ``state_dict`` holds them (the raw weights go to
  ``current_model_state``), so validate/test/predict/export of the checkpoint use the EMA
  model with no extra step. The decay warms up as TensorFlow's ``ExponentialMovingAverage``
  does with ``num_updates``: ``min(D, (1 + n) / (10 + n))`` after ``n`` updates, so a short
  run's average is not dominated by its first steps.
- ``--freeze-backbone [--unfreeze-at-epoch N]``: Lightning's ``BackboneFinetuning`` on the
  task's ``backbone`` module (everything but the head); at epoch N the backbone joins the
  optimizer at a tenth of the learning rate, rising each epoch (Lightning's defaults).
"""

from __future__ import annotations

import sys
from typing import Any

from visionkit_core.kit.ema import ema_avg_fn
from visionkit_core.run.config import EMA_DECAY, RunConfig

__all__ = ["ema_avg_fn", "ema_callback", "finetuning_callback", "recipe_callbacks"]


def ema_callback(decay: float) -> Any:
    """The kit's :class:`~visionkit_core.kit.ema.EMA` (Lightning's ``EMAWeightAveraging``, decay warm-up)."""
    from visionkit_core.kit.ema import EMA

    return EMA(decay)


def finetuning_callback(unfreeze_at_epoch: int | None) -> Any:
    """Lightning's ``BackboneFinetuning``: the backbone frozen until ``unfreeze_at_epoch`` (None: never)."""
    import warnings

    from lightning.pytorch.callbacks import BackboneFinetuning

    # train_bn (Lightning's default) keeps BatchNorm in the optimizer; unfreezing then warns that
    # those parameters are there already, which is expected
    warnings.filterwarnings("ignore", message="The provided params to be frozen already exist")
    epoch = sys.maxsize if unfreeze_at_epoch is None else int(unfreeze_at_epoch)
    return BackboneFinetuning(unfreeze_backbone_at_epoch=epoch, verbose=False)


def recipe_callbacks(run: RunConfig) -> list[Any]:
    """The callbacks ``run``'s recipe flags ask for (the assembler checked that the task can take them)."""
    callbacks: list[Any] = []
    if run.freeze_backbone:
        callbacks.append(finetuning_callback(run.unfreeze_at_epoch))
    if run.ema:
        callbacks.append(ema_callback(run.ema_decay if run.ema_decay is not None else EMA_DECAY))
    return callbacks
