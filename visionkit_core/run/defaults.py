"""Defaults that fit the data: the batch size, learning rate and epochs a user did not give.

A batch of 64 on 160 training images is 2 optimizer steps an epoch; the run would learn
little and say nothing. So when ``--batch-size``, ``--lr`` or ``--epochs`` is not given (by a
flag, ``--config`` or ``--set``), the run chooses it from the training set's size
(:attr:`DataInfo.train_size`) and the task's :class:`TaskSpec`:

- batch size: the task's ``default_batch_size`` when it gives :data:`MIN_STEPS` optimizer steps
  an epoch (per device, full batches only), else the largest power of two below it that does,
  at least :data:`MIN_BATCH`;
- learning rate: the task's ``default_lr`` times ``sqrt(batch / default_batch_size)`` (AdamW), where
  batch is what one optimizer step sees (per-device batch x processes x accumulated batches);
- epochs: the dataset's own ``default_epochs`` (a demo's), else the task's, else enough for
  about :data:`TARGET_STEPS` optimizer steps, between :data:`MIN_EPOCHS` and :data:`MAX_EPOCHS`.

Each value is recorded with its reason in ``config.yaml`` (``derived.defaults``); the resolved
config holds the values, so checkpoints, ``--resume``, validate and predict see them. A value
the user gave is never replaced. Importable without torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from visionkit_core.plugin.contract import TaskSpec
from visionkit_core.run.config import RunConfig

#: optimizer steps an epoch the chosen batch size gives at least (when the data allows it)
MIN_STEPS = 10
#: the smallest batch size chosen (BatchNorm needs two samples)
MIN_BATCH = 2
#: optimizer steps the chosen number of epochs gives, about
TARGET_STEPS = 500
MIN_EPOCHS, MAX_EPOCHS = 10, 100
#: epochs when the training set's size is unknown
UNKNOWN_SIZE_EPOCHS = 10


@dataclass(frozen=True)
class Choice:
    """One value of the run and why it is what it is."""

    value: Any
    reason: str
    chosen: bool = True  # False: the user's (or the checkpoint's) value, kept


@dataclass
class FitDefaults:
    """The batch size, learning rate and epochs of a run, with their reasons."""

    choices: dict[str, Choice] = field(default_factory=dict)
    train_size: int | None = None
    steps_per_epoch: int | None = None

    def apply(self, config: RunConfig) -> RunConfig:
        """``config`` with the chosen values filled in (the user's are already there)."""
        return dataclasses.replace(config, **{k: c.value for k, c in self.choices.items() if c.chosen})

    def record(self) -> dict[str, Any]:
        """What ``config.yaml``'s ``derived.defaults`` says."""
        out: dict[str, Any] = {k: {"value": c.value, "reason": c.reason} for k, c in self.choices.items()}
        out["train_size"] = self.train_size
        out["optimizer_steps_per_epoch"] = self.steps_per_epoch
        return out

    def line(self) -> str | None:
        """The one line of output that says what was chosen (None: nothing was)."""
        chosen = [(k, c) for k, c in self.choices.items() if c.chosen]
        if not chosen:
            return None
        flags = {"batch_size": "--batch-size", "lr": "--lr", "epochs": "--epochs"}
        size = "training set of unknown size"
        if self.train_size is not None:
            size = f"{self.train_size} training samples"
        steps = f", {self.steps_per_epoch} optimizer steps an epoch" if self.steps_per_epoch else ""
        parts = "; ".join(f"{k.replace('_', ' ')} {_fmt(c.value)} ({c.reason})" for k, c in chosen)
        give = "/".join(flags[k] for k, _ in chosen)
        return f"visionkit: {size}{steps}: {parts}; give {give} to choose"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def optimizer_steps(train_size: int, batch: int, world: int = 1, accumulate: int = 1) -> int:
    """Optimizer steps an epoch: per device, full batches only (the kit's loaders drop the last
    partial batch unless a device would get no batch at all), ``accumulate`` batches a step."""
    per_device = -(-train_size // max(1, world))
    batches = per_device // batch if per_device > batch else 1
    return max(1, -(-batches // max(1, accumulate)))


def fit_batch(train_size: int, default: int, world: int = 1, accumulate: int = 1) -> int:
    """The task's ``default`` batch size, or the largest power of two below it that gives
    :data:`MIN_STEPS` optimizer steps an epoch; never below :data:`MIN_BATCH` (nor above ``default``)."""
    candidates = [default] + [2**k for k in range(int(math.log2(default)), -1, -1) if 2**k < default]
    floor = min(default, MIN_BATCH)
    for batch in candidates:
        if batch <= floor or optimizer_steps(train_size, batch, world, accumulate) >= MIN_STEPS:
            return max(batch, floor)
    return floor


def scaled_lr(default_lr: float, batch: int, default_batch: int) -> float:
    """``default_lr`` scaled by ``sqrt(batch / default_batch)``, to three significant digits."""
    return float(f"{default_lr * math.sqrt(batch / default_batch):.3g}")


def fit_epochs(steps_per_epoch: int) -> int:
    """Epochs for about :data:`TARGET_STEPS` optimizer steps, :data:`MIN_EPOCHS` to :data:`MAX_EPOCHS`."""
    return min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))


def choose(
    config: RunConfig,
    spec: TaskSpec,
    train_size: int | None,
    *,
    world: int = 1,
    epochs_reason: str | None = None,
    takes_batch: bool = True,
    kept: Mapping[str, str] | None = None,
) -> FitDefaults:
    """The batch size, lr and epochs of a run whose config is ``config`` (``None``: not given).

    ``epochs_reason`` says where ``config.epochs`` came from when the user did not give it (the
    dataset's or the task's ``default_epochs``); ``takes_batch`` is False when the dataset takes no
    ``batch_size``; ``kept`` gives the reason recorded for a value the config already holds, per
    field (default: "given").
    """
    given = {k: (kept or {}).get(k, "given") for k in ("batch_size", "lr", "epochs")}
    out = FitDefaults(train_size=train_size)
    accumulate = config.accumulate_grad_batches
    task = f"the {spec.name} task's"
    if config.batch_size is not None:
        batch = config.batch_size
        out.choices["batch_size"] = Choice(batch, given["batch_size"], chosen=False)
    elif not takes_batch:
        batch = spec.default_batch_size
    elif train_size is None:
        batch = spec.default_batch_size
        out.choices["batch_size"] = Choice(batch, f"{task} default; the data does not say its size")
    else:
        batch = fit_batch(train_size, spec.default_batch_size, world, accumulate)
        if batch == spec.default_batch_size:
            why = f"{task} default"
        else:
            full = optimizer_steps(train_size, spec.default_batch_size, world, accumulate)
            why = f"{task} {spec.default_batch_size} gives {full} optimizer step{'s' * (full != 1)} an epoch"
        out.choices["batch_size"] = Choice(batch, why)
    if train_size is not None:
        out.steps_per_epoch = optimizer_steps(train_size, batch, world, accumulate)
    # the lr follows the batch an optimizer step sees: all processes' batches, accumulated (so a
    # 2-process DDP run at 8 per device steps like one process at 16)
    effective = batch * max(1, world) * max(1, accumulate)
    if config.lr is not None:
        out.choices["lr"] = Choice(config.lr, given["lr"], chosen=False)
    elif effective == spec.default_batch_size:
        out.choices["lr"] = Choice(spec.default_lr, f"{task} default at batch {effective}")
    else:
        lr = scaled_lr(spec.default_lr, effective, spec.default_batch_size)
        why = f"{task} {spec.default_lr:g} x sqrt({effective}/{spec.default_batch_size})"
        out.choices["lr"] = Choice(lr, why)
    if config.epochs is not None:
        reason = epochs_reason or given["epochs"]
        out.choices["epochs"] = Choice(config.epochs, reason, chosen=False)
    elif out.steps_per_epoch is None:
        out.choices["epochs"] = Choice(UNKNOWN_SIZE_EPOCHS, "the data does not say its size")
    else:
        epochs = fit_epochs(out.steps_per_epoch)
        why = f"about {TARGET_STEPS} optimizer steps, {MIN_EPOCHS} to {MAX_EPOCHS} epochs"
        out.choices["epochs"] = Choice(epochs, why)
    return out


def world_size(config: RunConfig) -> int:
    """The processes a run trains on, from ``--devices`` and ``--num-nodes`` (before the Trainer exists)."""
    devices = config.devices
    if devices == "auto" or devices.strip() == "-1":
        count = 1
        if config.accelerator in ("auto", "gpu", "cuda"):
            import torch

            count = max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    elif "," in devices:
        count = len([d for d in devices.split(",") if d])
    else:
        count = max(1, int(devices))
    return count * max(1, config.num_nodes)
