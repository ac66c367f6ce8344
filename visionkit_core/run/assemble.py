"""The one place that turns a RunConfig into Lightning objects and runs them.

A straight line, in LightningCLI's order: resolve names (errors before heavy imports),
seed, build data -> task (which builds its backbone) -> loggers -> callbacks -> Trainer,
fit, then write ``summary.json``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from visionkit_core import __version__
from visionkit_core.run.build import call_with_accepted
from visionkit_core.run.config import RunConfig, check_options
from visionkit_core.training.distributed import (
    fsdp_strategy,
    gather_skipped,
    launch_rank,
    publish_run_dir,
    shared_run_dir,
    slurm_resume_checkpoint,
)
from visionkit_core.errors import UsageError
from visionkit_core.plugin.hookspecs import HOOKSPEC_VERSION
from visionkit_core.plugin.manager import Plugins, get_plugins, use_plugins
from visionkit_core.plugin.registry import Component

DATASET_RESERVED = {
    "root": "--data",
    "batch_size": "--batch-size",
    "image_size": "--image-size",
    "val_split": "--val-split",
    "seed": "--seed",
    "num_workers": "num_workers",
    "on_bad_image": "--on-bad-image",
}
TASK_RESERVED = {
    "backbone": "--backbone",
    "num_classes": "the dataset",
    "class_names": "the dataset",
    "lr": "--lr",
    "pretrained": "--pretrained",
    "weights": "--weights",
    "backbone_options": "--set backbone.KEY=VALUE",
    "preprocessing": "the backbone",
}
_LOGGER_RESERVED = {"run_dir": "--run-dir", "run_name": "--run-dir"}
_CALLBACK_RESERVED = {"run_dir": "--run-dir", "class_names": "the dataset"}
TRAINER_MANAGED = {
    "max_epochs": "--epochs",
    "accelerator": "--accelerator",
    "devices": "--devices",
    "strategy": "--strategy",
    "num_nodes": "--num-nodes",
    "precision": "--precision",
    "deterministic": "--deterministic",
    "callbacks": "--callback",
    "logger": "--logger",
    "default_root_dir": "--run-dir",
}


@dataclass
class Resolved:
    """The components a config names, resolved before anything heavy is imported."""

    backbone: Component
    task: Component
    dataset: Component
    data_root: str | None
    loggers: list[Component] = field(default_factory=list)
    callbacks: list[Component] = field(default_factory=list)


def resolve_components(config: RunConfig, plugins: Plugins) -> Resolved:
    """Resolve every name in ``config``; unknown names fail here, with suggestions."""
    reg = plugins.registry
    backbone = reg.resolve("backbone", config.backbone)
    task = reg.resolve("task", config.task)
    dataset, root = resolve_data(config.data, plugins)
    loggers = [reg.resolve("logger", n) for n in config.loggers]
    callbacks = [reg.resolve("callback", n) for n in config.callbacks]
    return Resolved(backbone, task, dataset, root, loggers, callbacks)


def validate_components(config: RunConfig, plugins: Plugins) -> Resolved:
    """Resolve names and check every ``--set`` option against its factory, building nothing."""
    resolved = resolve_components(config, plugins)
    from visionkit_core.run.build import BACKBONE_RESERVED

    check_options(
        "backbone",
        resolved.backbone.qualname,
        resolved.backbone.load(),
        config.section("backbone"),
        BACKBONE_RESERVED,
    )
    check_options("task", resolved.task.qualname, resolved.task.load(), config.section("task"), TASK_RESERVED)
    check_options(
        "data", resolved.dataset.qualname, resolved.dataset.load(), config.section("data"), DATASET_RESERVED
    )
    for comp in resolved.loggers:
        check_options(
            f"logger.{comp.name}",
            comp.qualname,
            comp.load(),
            config.section("logger", comp.qualname),
            _LOGGER_RESERVED,
        )
    for comp in resolved.callbacks:
        check_options(
            f"callback.{comp.name}",
            comp.qualname,
            comp.load(),
            config.section("callback", comp.qualname),
            _CALLBACK_RESERVED,
        )
    _check_sections(config, resolved)
    if config.section("trainer"):
        import lightning as L

        check_options("trainer", "lightning.Trainer", L.Trainer, config.section("trainer"), TRAINER_MANAGED)
    return resolved


def _check_sections(config: RunConfig, resolved: Resolved) -> None:
    """Options for a logger/callback that is not selected are a mistake, not a no-op."""
    for section, comps in (("logger", resolved.loggers), ("callback", resolved.callbacks)):
        chosen = {c.name for c in comps} | {c.qualname for c in comps}
        for name in config.options.get(section) or {}:
            if name not in chosen:
                raise UsageError(
                    f"--set {section}.{name}.*: {section} {name!r} is not selected; add --{section} {name}"
                )


def resolve_data(data: str, plugins: Plugins) -> tuple[Component, str | None]:
    """``--data`` is a registered dataset name or an ImageFolder directory."""
    reg = plugins.registry
    path = Path(data).expanduser()
    explicit_path = os.sep in data or data.startswith((".", "~"))
    if not explicit_path and not path.exists():
        try:
            return reg.resolve("dataset", data), None
        except UsageError as err:
            if ":" in data:
                raise
            names = ", ".join(c.name for c in reg.static_components("dataset"))
            raise UsageError(
                f"--data {data!r}: no such folder, and no dataset of that name ({err}); "
                f"give an ImageFolder directory or one of: {names}"
            ) from None
    if not explicit_path and ":" not in data:
        try:  # a registered dataset name wins over a folder of that name (write ./NAME for the folder)
            return reg.resolve("dataset", data), None
        except UsageError:
            pass
    if not path.exists():
        raise UsageError(f"--data {data!r}: folder not found; give an existing ImageFolder directory")
    if not path.is_dir():
        raise UsageError(f"--data {data!r} is a file; give a directory of class folders (or train/ and val/)")
    return reg.resolve("dataset", "imagefolder"), str(path)


def default_run_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.backbone).strip("-")
    return Path("runs") / f"{stamp}-{safe}"


def prepare_run_dir(config: RunConfig) -> Path:
    """Create the run directory; refuse to overwrite an earlier run unless resuming."""
    run_dir = (
        Path(config.run_dir) if config.run_dir else shared_run_dir(default_run_dir(config), config.backbone)
    )
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {str(run_dir)!r} is a file; choose a directory")
    continuing = config.resume is not None or slurm_resume_checkpoint(run_dir) is not None
    if (run_dir / "config.yaml").exists() and not continuing and launch_rank() == 0:
        raise UsageError(
            f"--run-dir {str(run_dir)!r} already holds a run; continue it with --resume last, "
            "or choose another --run-dir"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create run directory {str(run_dir)!r}: {err.strerror}") from None
    return run_dir


def _precision(config: RunConfig, accelerator: str) -> str:
    if config.precision != "auto":
        return config.precision
    if accelerator in ("gpu", "cuda"):
        import torch

        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed"
        return "16-mixed" if torch.cuda.is_available() else "32-true"
    return "32-true"


def _accelerator(config: RunConfig) -> str:
    if config.accelerator != "auto":
        return config.accelerator
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _devices(value: str) -> int | str | list[int]:
    if value == "auto":
        return "auto"
    if "," in value:
        return [int(v) for v in value.split(",") if v]
    return int(value)


def build_datamodule(config: RunConfig, dataset: Component, root: str | None) -> Any:
    """Call the dataset factory with the run's data settings and ``--set data.*`` options."""
    return call_with_accepted(
        dataset.load(),
        {
            "root": root,
            "batch_size": config.batch_size,
            "image_size": config.image_size,
            "val_split": config.val_split,
            "seed": config.seed,
            "num_workers": config.num_workers,
            "on_bad_image": config.on_bad_image,
        },
        config.section("data"),
    )


def make_trainer(kwargs: dict[str, Any]) -> Any:
    """``lightning.Trainer(**kwargs)``; arguments Lightning rejects are usage errors, not crashes."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(
            f"Lightning rejected the trainer settings: {first} (check --accelerator, --devices, "
            "--strategy, --precision and --set trainer.*)"
        ) from None


def _performance_layout(model: Any, accelerator: str, compile_model: bool) -> Any:
    """channels_last on GPUs (faster convolutions with mixed precision); ``torch.compile`` if asked."""
    import torch

    if accelerator in ("gpu", "cuda"):
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile_model else model


@dataclass
class TrainResult:
    """What ``visionkit train`` reports at the end."""

    run_dir: Path
    summary: dict[str, Any]
    is_global_zero: bool = True


def run_meta(config: RunConfig, resolved: Resolved) -> dict[str, Any]:
    """Plain-type metadata a checkpoint carries about the run that wrote it."""
    comps = [resolved.backbone, resolved.task, resolved.dataset, *resolved.loggers, *resolved.callbacks]
    return {
        "format": 1,
        "visionkit_version": __version__,
        "hookspec_version": HOOKSPEC_VERSION,
        "config": config.to_dict(),
        "components": {
            c.kind if c.kind in ("backbone", "task", "dataset") else f"{c.kind}:{c.qualname}": {
                "name": c.qualname,
                "plugin": c.origin.plugin,
                "distribution": c.origin.distribution,
                "version": c.origin.version,
            }
            for c in comps
        },
    }


def build_trainer_kwargs(config: RunConfig, run_dir: Path) -> dict[str, Any]:

    accelerator = _accelerator(config)
    options = config.section("trainer")
    kwargs: dict[str, Any] = {
        "max_epochs": config.epochs,
        "accelerator": accelerator,
        "devices": _devices(config.devices),
        "strategy": config.strategy,
        "num_nodes": config.num_nodes,
        "precision": _precision(config, accelerator),
        "deterministic": config.deterministic,
        "sync_batchnorm": config.sync_batchnorm,
        "default_root_dir": str(run_dir),
        "log_every_n_steps": 10,
        "enable_model_summary": False,
    }
    kwargs.update(options)
    return kwargs


def run_train(
    config: RunConfig,
    *,
    plugins: Plugins | None = None,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Assemble and run one training run; return the run directory and summary."""
    plugins = plugins or get_plugins()
    with use_plugins(plugins):  # tasks build their backbone through the same registry
        return _run_train(config, plugins, echo)


def _run_train(config: RunConfig, plugins: Plugins, echo: Callable[[str], None]) -> TrainResult:
    resolved = validate_components(config, plugins)

    import lightning as L
    from visionkit_callbacks.defaults import checkpoint_callback, default_callbacks
    from visionkit_callbacks.plots import EvaluationPlots
    from visionkit_loggers.wandb_logger import finish_loggers

    from visionkit_core.training.checkpoint_io import with_atomic_io
    from visionkit_core.training.guards import SIGTERMException, guard_callbacks, terminated
    from visionkit_core.training.runtime import (
        PlainHyperparameters,
        RNGState,
        ThroughputCallback,
        quiet_lightning,
    )
    from visionkit_core.training.checkpoint import write_json

    quiet_lightning()
    L.seed_everything(config.seed, workers=True, verbose=False)

    datamodule = build_datamodule(config, resolved.dataset, resolved.data_root)
    class_names = list(datamodule.class_names())
    image_size = getattr(datamodule, "image_size", config.image_size)
    config.image_size = int(image_size) if image_size is not None else None

    task_factory = resolved.task.load()
    task_options = config.section("task")
    model = call_with_accepted(
        task_factory,
        {
            "backbone": resolved.backbone.qualname,
            "num_classes": len(class_names),
            "class_names": class_names,
            "lr": config.lr,
            "pretrained": config.pretrained,
            "weights": config.weights or config.init_from,
            "backbone_options": config.section("backbone"),
        },
        task_options,
    )
    model.visionkit_meta = run_meta(config, resolved)

    run_dir = prepare_run_dir(config)
    config.run_dir = str(run_dir)
    run_name = run_dir.name
    loggers = []
    for comp in resolved.loggers:
        factory = comp.load()
        opts = config.section("logger", comp.qualname)
        loggers.append(call_with_accepted(factory, {"run_dir": run_dir, "run_name": run_name}, opts))
    throughput = ThroughputCallback()
    callbacks = [
        *default_callbacks(run_dir),
        throughput,
        PlainHyperparameters(),
        RNGState(),
        EvaluationPlots(run_dir),
        *guard_callbacks(),
    ]
    for comp in resolved.callbacks:
        factory = comp.load()
        opts = config.section("callback", comp.qualname)
        callbacks.append(call_with_accepted(factory, {"run_dir": run_dir, "class_names": class_names}, opts))

    trainer_kwargs = build_trainer_kwargs(config, run_dir)
    if config.sync_batchnorm and trainer_kwargs["accelerator"] not in ("gpu", "cuda"):
        raise UsageError(
            "--sync-batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernel); drop it on CPU"
        )
    if config.strategy == "fsdp":
        trainer_kwargs["strategy"] = fsdp_strategy(
            model, trainer_kwargs["accelerator"], config.activation_checkpointing
        )
    trainer_kwargs["callbacks"] = callbacks
    trainer_kwargs["logger"] = loggers or False
    plugins.configure_trainer(trainer_kwargs, config)
    trainer_kwargs["plugins"] = with_atomic_io(trainer_kwargs.get("plugins"))  # atomic saves, safe loads
    trainer = make_trainer(trainer_kwargs)
    fit_model = _performance_layout(model, trainer_kwargs["accelerator"], config.compile)

    if trainer.is_global_zero:
        (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")

    ckpt_path = None
    publish_run_dir(run_dir)
    if config.resume is None and (requeued := slurm_resume_checkpoint(run_dir)) is not None:
        echo(f"visionkit: SLURM job requeued; continuing from {requeued}")
        ckpt_path = str(requeued)
    if config.resume:
        from visionkit_core.training.resume import find_resume_checkpoint

        ckpt_path = str(find_resume_checkpoint(config.resume, str(run_dir))[0])

    started = time.perf_counter()
    failed = True
    try:
        trainer.fit(fit_model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        failed = False
    except SIGTERMException:  # Lightning exits 0 on SIGTERM; visionkit reports it and exits 143
        raise terminated(callbacks, run_dir) from None
    finally:
        finish_loggers(loggers, failed=failed)
    wall = time.perf_counter() - started

    ckpt = checkpoint_callback(trainer.callbacks)  # type: ignore[attr-defined]
    metrics = {k: round(float(v), 6) for k, v in sorted(trainer.callback_metrics.items()) if "/" in k}
    summary = {
        "metrics": metrics,
        "best_checkpoint": str(ckpt.best_model_path) if ckpt and ckpt.best_model_path else None,
        "last_checkpoint": str(Path(ckpt.dirpath) / "last.ckpt") if ckpt and ckpt.dirpath else None,
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "wall_s": round(wall, 3),
        "train_images_per_s": round(throughput.images_per_s * trainer.world_size, 2),
        "skipped_images": len(gather_skipped(trainer, set(getattr(datamodule, "skipped_images", ()) or ()))),
        "interrupted": bool(trainer.interrupted),
        "class_names": class_names,
        "backbone": resolved.backbone.qualname,
        "task": resolved.task.qualname,
        "dataset": resolved.dataset.qualname,
    }
    if trainer.is_global_zero:
        write_json(run_dir / "summary.json", summary)
    return TrainResult(run_dir, summary, bool(trainer.is_global_zero))
