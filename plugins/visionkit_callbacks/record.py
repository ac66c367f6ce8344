"""``config.yaml``'s ``derived`` section: every choice that shaped the run (:class:`RunRecord`).

A default callback of every fit (``visionkit_default_callbacks``); recorded, never read back.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from visionkit_callbacks.threads import ThreadPolicy
from visionkit_core.training.runtime import plain


class RunRecord(Callback):
    """Add what shaped the run to ``config.yaml``'s ``derived`` section when training starts.

    The resolved config names the flags; this records what they (and the task's and dataset's
    own defaults) became once everything was built: ``task`` and ``data`` (every
    hyperparameter of the LightningModule and the datamodule: network, loss, augmentation
    recipe), ``optimizer`` (class, per-group rate and weight decay), ``schedule`` (class,
    interval, total and warmup steps), ``callbacks`` (the recipe callbacks: EMA and its decay,
    backbone fine-tuning) and ``runtime`` (torch threads, loader workers, precision, devices).
    Written on rank zero; recorded, never read back.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = os.path.join(os.fspath(run_dir), "config.yaml")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._update(describe_run(trainer, pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The thread counts chosen during the run (:class:`ThreadPolicy` adapts them each epoch)."""
        policies = [cb for cb in trainer.callbacks if isinstance(cb, ThreadPolicy)]  # type: ignore[attr-defined]
        if trainer.is_global_zero and policies:
            self._update({}, runtime=policies[0].describe())

    def _update(self, record: dict[str, Any], runtime: dict[str, Any] | None = None) -> None:
        if not os.path.exists(self.path):
            return
        import yaml

        from visionkit_core.run.config import DERIVED_KEY, redact

        with open(self.path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        derived = data.get(DERIVED_KEY) or {}
        derived.update(redact(plain(record)))  # a plugin option may be a secret (backbone.api_key)
        if runtime:
            derived["runtime"] = {**(derived.get("runtime") or {}), **redact(plain(runtime))}
        data[DERIVED_KEY] = derived
        with open(self.path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=False)


def describe_run(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """The resolved choices of a started fit (see :class:`RunRecord`)."""
    datamodule = getattr(trainer, "datamodule", None)
    record: dict[str, Any] = {
        "task": {
            "class": _qualname(pl_module),
            "parameters": sum(p.numel() for p in pl_module.parameters()),
            "trainable_parameters": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            **dict(pl_module.hparams),
        },
        "data": {"class": _qualname(datamodule), **dict(getattr(datamodule, "hparams", {}) or {})},
    }
    optimizers = [
        {
            "class": _qualname(opt),
            "groups": [
                {key: group[key] for key in _GROUP_KEYS if key in group}
                | {"parameters": sum(p.numel() for p in group["params"])}
                for group in opt.param_groups
            ],
        }
        for opt in trainer.optimizers
    ]
    record["optimizer"] = optimizers[0] if len(optimizers) == 1 else optimizers
    record["schedule"] = [_describe_scheduler(config, trainer) for config in trainer.lr_scheduler_configs]
    record["callbacks"] = [_describe_callback(cb) for cb in trainer.callbacks if _shapes_training(cb)]  # type: ignore[attr-defined]
    runtime: dict[str, Any] = {
        "accelerator": type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "precision": trainer.precision,
        "max_epochs": trainer.max_epochs,
        "train_batches_per_epoch": trainer.num_training_batches,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
    }
    loader = getattr(trainer, "train_dataloader", None)
    if loader is not None and hasattr(loader, "num_workers"):
        runtime["num_workers"] = loader.num_workers
        runtime["batch_size"] = getattr(loader, "batch_size", None)
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, ThreadPolicy):
            runtime.update(cb.describe())
    record["runtime"] = runtime
    return record


#: What a parameter group records (``initial_lr``: the base rate the schedule scales).
_GROUP_KEYS = ("initial_lr", "weight_decay", "betas", "eps", "momentum", "nesterov")


def _qualname(obj: Any) -> str | None:
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


def _describe_scheduler(config: Any, trainer: L.Trainer) -> dict[str, Any]:
    out: dict[str, Any] = {"class": _qualname(config.scheduler), "interval": config.interval}
    if type(config.scheduler).__name__ == "OwnGroupsLambdaLR":  # the kit's warmup + cosine
        from visionkit_core.kit.optim import MIN_LR_RATIO, schedule_lengths

        total, warmup = schedule_lengths(trainer)
        out.update({"kind": "linear warmup + cosine", "total_steps": total, "warmup_steps": warmup,
                    "final_lr_ratio": MIN_LR_RATIO})  # fmt: skip
    return out


#: Callback classes whose settings change what is trained (recorded in config.yaml).
_SHAPING = ("WeightAveraging", "BackboneFinetuning", "StochasticWeightAveraging", "CloseMosaic")


def _shapes_training(cb: Any) -> bool:
    return any(base.__name__ in _SHAPING for base in type(cb).__mro__)


def _describe_callback(cb: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"class": _qualname(cb)}
    describe = getattr(cb, "describe", None)
    if callable(describe):
        out.update(describe())
        return out
    for key in ("decay", "unfreeze_backbone_at_epoch", "swa_lrs", "swa_epoch_start"):
        if hasattr(cb, key):
            out[key] = getattr(cb, key)
    return out
