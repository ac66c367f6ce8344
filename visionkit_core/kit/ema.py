"""An exponential moving average of the weights: Lightning's ``EMAWeightAveraging`` with a warm-up.

Validation runs on the averaged weights, every checkpoint's ``state_dict`` holds them (the raw
weights go to ``current_model_state``, the average's own state to ``averaging_state``), so
``--resume`` continues both exactly and validate/test/predict/export of a checkpoint use the
average with no extra step. The decay warms up as TensorFlow's ``ExponentialMovingAverage``
does with ``num_updates``: ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short
run's average is not dominated by its first (random) weights.

``--ema [--ema-decay D]`` adds :class:`EMA` to any task's run. A task that wants it by default
(the dense tasks: detection, segmentation) takes ``ema`` and ``ema_decay`` options (checked by
:func:`check_decay`); the kit's task base then returns :func:`ema_callbacks` from its
``configure_callbacks``: one :class:`EMA` when ``ema`` is on and the run has none yet (a user's
``--ema --ema-decay D`` wins); ``--set task.ema=false`` turns it off.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import EMAWeightAveraging

#: The decay without ``--ema-decay`` (a task may choose its own).
DEFAULT_DECAY = 0.999


def ema_avg_fn(decay: float) -> Any:
    """``avg_fn(averaged, current, n)`` of an EMA whose decay is ``min(decay, (1 + n) / (10 + n))``."""

    def avg(averaged: Any, current: Any, num_averaged: Any) -> Any:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged + (current - averaged) * (1.0 - d)

    return avg


class EMA(EMAWeightAveraging):  # type: ignore[misc]
    """Lightning's ``EMAWeightAveraging`` whose decay ramps up over the first updates."""

    def __init__(self, decay: float = DEFAULT_DECAY) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1 (exclusive), got {decay}")
        super().__init__(decay=decay)
        self.decay = float(decay)
        self._kwargs["avg_fn"] = ema_avg_fn(self.decay)  # what setup() gives torch's AveragedModel

    def describe(self) -> dict[str, Any]:
        """What config.yaml records."""
        return {"decay": self.decay, "warmup": "min(decay, (1 + n) / (10 + n))"}


def check_decay(decay: float) -> None:
    """Refuse a task's ``ema_decay`` option outside ``(0, 1)`` (a ``ConfigError`` naming it)."""
    if not 0.0 < decay < 1.0:
        from visionkit_core import ConfigError

        raise ConfigError(f"--set task.ema_decay={decay}: must be between 0 and 1 (exclusive)")


def ema_callbacks(module: Any, enabled: bool, decay: float = DEFAULT_DECAY) -> list[EMA]:
    """For a task's ``configure_callbacks``: ``[EMA(decay)]`` when ``enabled`` and the run has no
    weight-averaging callback yet (``--ema`` from the user keeps its own), else ``[]``."""
    from lightning.pytorch.callbacks import WeightAveraging

    trainer = getattr(module, "_trainer", None)
    if (
        not enabled or trainer is None or trainer.state.fn != "fit"
    ):  # validate/test/predict: nothing to average
        return []
    if any(isinstance(cb, WeightAveraging) for cb in trainer.callbacks):
        return []
    return [EMA(decay)]
