"""Defaults that fit the data: the batch size, learning rate and epochs a user did not give, chosen
from the training set's size and the task's :class:`TaskSpec` (the rules: docs/workflow.md, "Defaults
that fit the data"). Each is recorded with its reason in ``config.yaml`` (``derived.defaults``); a value
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

MIN_STEPS = 10  # optimizer steps an epoch the chosen batch size gives at least (when the data allows it)
MIN_BATCH = 2  # the smallest batch size chosen (BatchNorm needs two samples)
TARGET_STEPS, MIN_EPOCHS, MAX_EPOCHS = 500, 10, 100  # optimizer steps the chosen epochs give, about
UNKNOWN_SIZE_EPOCHS = 10  # epochs when the training set's size is unknown


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
        out = {k: {"value": c.value, "reason": c.reason} for k, c in self.choices.items()}
        return {**out, "train_size": self.train_size, "optimizer_steps_per_epoch": self.steps_per_epoch}

    def line(self) -> str | None:
        """The one line of output that says what was chosen (None: nothing was)."""
        chosen = [(k, c) for k, c in self.choices.items() if c.chosen]
        if not chosen:
            return None
        size = "training set of unknown size"
        if self.train_size is not None:
            size = f"{self.train_size} training samples"
        steps = f", {self.steps_per_epoch} optimizer steps an epoch" if self.steps_per_epoch else ""
        parts = "; ".join(
            f"{k.replace('_', ' ')} {f'{c.value:g}' if isinstance(c.value, float) else c.value} ({c.reason})"
            for k, c in chosen
        )
        give = "/".join(f"--{k.replace('_', '-')}" for k, _ in chosen)
        return f"visionkit: {size}{steps}: {parts}; give {give} to choose"


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
            return int(max(batch, floor))
    return floor


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

    ``epochs_reason``: where ``config.epochs`` came from when the user gave none (a ``default_epochs``);
    ``takes_batch``: whether the dataset takes a ``batch_size``; ``kept``: the reason recorded for a value
    the config holds, per field (default: "given")."""
    given = {k: (kept or {}).get(k, "given") for k in ("batch_size", "lr", "epochs")}
    out, task = FitDefaults(train_size=train_size), f"the {spec.name} task's"
    accumulate, default = config.accumulate_grad_batches, spec.default_batch_size
    if config.batch_size is not None:
        batch = config.batch_size
        out.choices["batch_size"] = Choice(batch, given["batch_size"], chosen=False)
    elif not takes_batch or train_size is None:
        batch = default
        if takes_batch:
            out.choices["batch_size"] = Choice(batch, f"{task} default; the data does not say its size")
    else:
        batch = fit_batch(train_size, default, world, accumulate)
        full = optimizer_steps(train_size, default, world, accumulate)
        why = f"{task} {default} gives {full} optimizer step{'s' * (full != 1)} an epoch"
        out.choices["batch_size"] = Choice(batch, f"{task} default" if batch == default else why)
    if train_size is not None:
        out.steps_per_epoch = optimizer_steps(train_size, batch, world, accumulate)
    # the lr follows the batch an optimizer step sees: all processes' batches, accumulated (so a
    # 2-process DDP run at 8 per device steps like one process at 16)
    effective = batch * max(1, world) * max(1, accumulate)
    if config.lr is not None:
        out.choices["lr"] = Choice(config.lr, given["lr"], chosen=False)
    elif effective == default:
        out.choices["lr"] = Choice(spec.default_lr, f"{task} default at batch {effective}")
    else:
        lr = float(f"{spec.default_lr * math.sqrt(effective / default):.3g}")
        out.choices["lr"] = Choice(lr, f"{task} {spec.default_lr:g} x sqrt({effective}/{default})")
    if config.epochs is not None:
        out.choices["epochs"] = Choice(config.epochs, epochs_reason or given["epochs"], chosen=False)
    elif out.steps_per_epoch is None:
        out.choices["epochs"] = Choice(UNKNOWN_SIZE_EPOCHS, "the data does not say its size")
    else:
        why = f"about {TARGET_STEPS} optimizer steps, {MIN_EPOCHS} to {MAX_EPOCHS} epochs"
        out.choices["epochs"] = Choice(fit_epochs(out.steps_per_epoch), why)
    return out


def world_size(config: RunConfig) -> int:
    """The processes a run trains on, from ``--devices`` and ``--num-nodes`` (before the Trainer exists)."""
    devices = config.devices.strip()
    if devices in ("auto", "-1"):
        import torch

        gpus = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        count = torch.cuda.device_count() if gpus else 1
    elif "," in devices:
        count = len([d for d in devices.split(",") if d])
    else:
        count = max(1, int(devices))
    return count * max(1, config.num_nodes)
