"""The one place that turns a RunConfig into Lightning objects and runs them, for any task.

:func:`run_train` is a straight line of named steps in LightningCLI's order (docs/architecture.md,
"A run"); the task is known only through its :class:`TaskSpec`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionkit_core import __version__
from visionkit_core.errors import UsageError, VisionkitError
from visionkit_core.plugin.contract import DataInfo, DataSpec, TaskSpec
from visionkit_core.plugin.hookspecs import HOOKSPEC_VERSION
from visionkit_core.plugin.manager import Plugins, get_plugins, use_plugins
from visionkit_core.plugin.registry import Component
from visionkit_core.run.build import accepts, call_with_accepted
from visionkit_core.run.config import DERIVED_KEY, RunConfig, check_options
from visionkit_core.run.defaults import FitDefaults, choose, world_size
from visionkit_core.run.report import bad_samples_of, fit_summary, skipped_name, terminated
from visionkit_core.run.resolve import DATASET_RESERVED, Resolved, recipe_values
from visionkit_core.run.resolve import resolve_components as resolve_components  # re-exported
from visionkit_core.run.resolve import resolve_data as resolve_data  # re-exported
from visionkit_core.run.resolve import validate_components as validate_components  # re-exported
from visionkit_core.training import distributed
from visionkit_core.training.checkpoint import FORMAT_VERSION

if TYPE_CHECKING:
    from visionkit_core.training.resume import ResumePoint


def prepare_run_dir(config: RunConfig, created: list[Path] | None = None) -> Path:
    """Create the run directory (appended to ``created`` if new); never over a run unless resuming."""
    run_dir = Path(config.run_dir) if config.run_dir else None
    if run_dir is None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.backbone or "").strip("-")
        default = Path("runs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{safe}"
        run_dir = distributed.shared_run_dir(default, config.backbone or "")
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {str(run_dir)!r} is a file; choose a directory")
    continuing = config.resume is not None or distributed.slurm_resume_checkpoint(run_dir) is not None
    if (run_dir / "config.yaml").exists() and not continuing and distributed.launch_rank() == 0:
        raise UsageError(
            f"--run-dir {str(run_dir)!r} already holds a run; continue it with --resume last, "
            "or choose another --run-dir"
        )
    missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    if created is not None and missing:
        created.append(missing[-1])  # the top-most folder this run makes (e.g. runs/)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create run directory {str(run_dir)!r}: {err.strerror}") from None
    return run_dir


def _accelerator(config: RunConfig) -> str:
    if config.accelerator != "auto":
        return config.accelerator
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _precision(config: RunConfig, accelerator: str) -> str:
    if config.precision != "auto":
        return config.precision
    if accelerator in ("gpu", "cuda"):
        import torch

        if torch.cuda.is_available():
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_datamodule(
    config: RunConfig, dataset: Component, root: str | None, options: dict[str, Any] | None = None
) -> Any:
    """Call the dataset factory with the run's data settings and its ``--set data.*`` options (``options``:
    already converted; ``None``: ``config``'s, converted here)."""
    factory = dataset.load()
    if options is None:
        options = check_options("data", dataset.qualname, factory, config.section("data"), DATASET_RESERVED)
    names = ("batch_size", "image_size", "val_split", "seed", "num_workers", "on_bad_image")
    provided = {"root": root, **{k: getattr(config, k) for k in names}, **recipe_values(config, "data")}
    if config.batch_size is None:
        del provided["batch_size"]  # the dataset's own
    return call_with_accepted(factory, provided, options)


def data_info_of(datamodule: Any, dataset: Component, spec: TaskSpec) -> DataInfo:
    """Read the datamodule's :class:`DataInfo` and check it gives the task what it needs."""
    if callable(getattr(datamodule, "data_info", None)):
        info = datamodule.data_info()
    elif callable(getattr(datamodule, "class_names", None)):  # datamodules written for hookspec 1.0
        info = DataInfo(class_names=list(datamodule.class_names()))
    else:
        raise UsageError(
            f"dataset {dataset.qualname!r} from {dataset.origin.describe()} has no data_info(); "
            "see docs/plugins.md, 'Writing a dataset'"
        )
    if not isinstance(info, DataInfo):
        raise UsageError(
            f"dataset {dataset.qualname!r}: data_info() returned {type(info).__name__}, not DataInfo"
        )
    missing = info.missing(spec.needs)
    if missing:
        raise UsageError(
            f"task {spec.name!r} needs {', '.join(missing)} from the data, which dataset "
            f"{dataset.qualname!r} does not give; choose a dataset made for this task"
        )
    return info


def data_spec_of(datamodule: Any) -> DataSpec:
    """The datamodule's :class:`DataSpec` (train and val, tuple batches, when it declares none)."""
    spec = datamodule.data_spec() if callable(getattr(datamodule, "data_spec", None)) else None
    return spec if isinstance(spec, DataSpec) else DataSpec()


def build_task(resolved: Resolved, info: DataInfo) -> Any:
    """Call the task factory with the data-derived values and the run's model settings."""
    config, task = resolved.config, resolved.task
    provided = {
        **info.task_kwargs(),
        "backbone": resolved.backbone.qualname,
        **({"lr": config.lr} if config.lr is not None else {}),
        "pretrained": config.pretrained,
        "weights": config.weights or config.init_from,
        "backbone_options": resolved.options["backbone"],
        **recipe_values(config, "task"),
    }
    factory = task.load()
    if (config.weights or config.init_from) and not accepts(factory, "weights"):
        raise UsageError(
            f"{'--weights' if config.weights else '--init-from'}: task {task.qualname!r} (plugin "
            f"{task.origin.plugin}) takes no weights; drop the flag, or give the task a `weights` argument "
            "(the kit's TaskBase.load_weights_into loads it)"
        )
    model = call_with_accepted(factory, provided, resolved.options["task"])
    from torch import nn

    if config.freeze_backbone and not isinstance(getattr(model, "backbone", None), nn.Module):
        raise UsageError(
            f"--freeze-backbone: task {task.qualname!r} has no `backbone` module (Lightning's "
            "BackboneFinetuning freezes `pl_module.backbone`); drop the flag for this task"
        )
    return model


def run_meta(resolved: Resolved, info: DataInfo, preprocessing: dict[str, Any]) -> dict[str, Any]:
    """The ``"visionkit"`` entry of every checkpoint: what is needed to use it alone (plain types)."""
    comps = [resolved.backbone, resolved.task, resolved.dataset, *resolved.loggers, *resolved.callbacks]
    return {
        "format": FORMAT_VERSION,
        "visionkit_version": __version__,
        "hookspec_version": HOOKSPEC_VERSION,
        "task": resolved.task_spec.name,
        "monitor": {"metric": resolved.task_spec.monitor, "mode": resolved.task_spec.mode},
        "backbone": resolved.backbone.qualname,
        "config": resolved.config.to_dict(),
        "data_info": info.to_dict(),
        "class_names": list(info.class_names),
        "preprocessing": preprocessing,
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


@dataclass
class FitParts:
    """What a fit (``train`` and ``tune``) is built from; ``resolved`` holds the values ``defaults`` chose."""

    datamodule: Any
    info: DataInfo
    model: Any
    preprocessing: dict[str, Any]
    resolved: Resolved
    defaults: FitDefaults


def build_fit_parts(resolved: Resolved, kept: Mapping[str, str] | None = None) -> FitParts:
    """Seed, build the data, choose what the user left to it (``kept``: why, per field), build the task."""
    import lightning as L

    from visionkit_core.training.runtime import plain, quiet_lightning

    config, spec, dataset = resolved.config, resolved.task_spec, resolved.dataset
    data = (dataset, resolved.data_root, resolved.options["data"])
    quiet_lightning()
    L.seed_everything(config.seed, workers=True, verbose=False)
    first = config if config.batch_size is not None else replace(config, batch_size=spec.default_batch_size)
    datamodule = build_datamodule(first, *data)
    info = data_info_of(datamodule, dataset, spec)
    takes_batch, reason = accepts(dataset.load(), "batch_size"), resolved.epochs_reason
    world = world_size(config)
    defaults = choose(
        config, spec, info.train_size, world=world, epochs_reason=reason, takes_batch=takes_batch, kept=kept
    )
    resolved = replace(resolved, config=defaults.apply(config))
    batch = resolved.config.batch_size
    if batch is not None and batch != first.batch_size:
        if not hasattr(datamodule, "batch_size"):
            datamodule = build_datamodule(resolved.config, *data)
        else:  # set as Lightning's Tuner sets it, and in the hparams a checkpoint records
            datamodule.batch_size = batch
            hparams = getattr(datamodule, "hparams", None)
            if hparams is not None and "batch_size" in hparams:
                hparams["batch_size"] = batch
    model = build_task(resolved, info)
    # the model's normalisation with the data's predict/export preprocessing
    data_prep = datamodule.preprocessing() if callable(getattr(datamodule, "preprocessing", None)) else {}
    model_prep = dict(getattr(model, "preprocessing", None) or {})
    preprocessing = dict(plain({**model_prep, **dict(data_prep or {})}))
    return FitParts(datamodule, info, model, preprocessing, resolved, defaults)


def build_loggers(resolved: Resolved, run_dir: Path) -> list[Any]:
    """The ``--logger`` loggers, each given the run directory and name."""
    provided = {"run_dir": run_dir, "run_name": run_dir.name}
    return [
        call_with_accepted(c.load(), provided, resolved.options[f"logger:{c.qualname}"])
        for c in resolved.loggers
    ]


def fit_callbacks(
    plugins: Plugins, resolved: Resolved, parts: FitParts, run_dir: Path, extra: Sequence[Any] = ()
) -> list[Any]:
    """The core's callback, the plugins' defaults, the task's evaluation, ``extra``, then ``--callback``."""
    from visionkit_core.training.runtime import RunMetadata

    evaluation = getattr(parts.model, "evaluation_callbacks", None)
    provided = {"run_dir": run_dir, "class_names": parts.info.class_names, "data_info": parts.info}
    return [
        RunMetadata(run_meta(resolved, parts.info, parts.preprocessing)),
        *trainer_callbacks(plugins, "fit", run_dir, resolved.task_spec),
        *(evaluation(run_dir) if callable(evaluation) else []),
        *extra,
        *(
            call_with_accepted(c.load(), provided, resolved.options[f"callback:{c.qualname}"])
            for c in resolved.callbacks
        ),
    ]


def trainer_callbacks(plugins: Plugins, stage: str, run_dir: Path | None, spec: TaskSpec) -> list[Any]:
    """What every Trainer of ``stage`` gets from the plugins: default callbacks and a progress display."""
    callbacks = list(plugins.default_callbacks(stage, run_dir, spec))
    bar = plugins.progress_bar(stage)
    return [*callbacks, bar] if bar is not None else callbacks


def trainer_kwargs(resolved: Resolved, run_dir: Path, model: Any = None) -> dict[str, Any]:
    """The Trainer arguments of the run: hardware, precision, recipe, ``--set trainer.*`` (converted)."""
    config = resolved.config
    accelerator = _accelerator(config)
    strategy: Any = config.strategy
    if strategy == "fsdp" and model is not None:
        strategy = distributed.fsdp_strategy(model, accelerator, config.activation_checkpointing)
    devices: Any = config.devices
    if devices != "auto":
        devices = [int(v) for v in devices.split(",") if v] if "," in devices else int(devices)
    return {
        "max_epochs": config.epochs,
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy,
        "num_nodes": config.num_nodes,
        "precision": _precision(config, accelerator),
        "deterministic": config.deterministic,
        "sync_batchnorm": config.sync_batchnorm,
        "default_root_dir": str(run_dir),
        "log_every_n_steps": 10,
        "enable_model_summary": False,
        **recipe_values(config, "trainer"),
        **resolved.options.get("trainer", {}),
    }


def build_trainer(
    plugins: Plugins,
    config: RunConfig,
    kwargs: dict[str, Any],
    callbacks: list[Any],
    loggers: list[Any],
    resume: ResumePoint | None = None,
) -> Any:
    """The Trainer, after the plugins' ``visionkit_configure_trainer``; checkpoints are saved atomically and
    loaded safely (the ``--resume`` one already read is not read again)."""
    from lightning.pytorch.callbacks import ProgressBar

    from visionkit_core.training.checkpoint_io import with_atomic_io

    kwargs = {**kwargs, "callbacks": callbacks, "logger": loggers or False}
    if not any(isinstance(cb, ProgressBar) for cb in callbacks):
        kwargs["enable_progress_bar"] = False
    plugins.configure_trainer(kwargs, config)
    preloaded = {str(resume.path): resume.checkpoint} if resume is not None else {}
    kwargs["plugins"] = with_atomic_io(kwargs.get("plugins"), preloaded)
    return make_trainer(kwargs)


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


@dataclass
class TrainResult:
    """What ``visionkit train`` reports at the end."""

    run_dir: Path
    summary: dict[str, Any]
    is_global_zero: bool = True


def run_train(
    config: RunConfig,
    *,
    plugins: Plugins | None = None,
    echo: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
    resume: ResumePoint | None = None,
) -> TrainResult:
    """Assemble and run one training run. ``callbacks``: extra ones for this run only (a sweep's pruning
    callback); ``resume``: the checkpoint ``config.resume`` names, when the caller has read it already."""
    plugins = plugins or get_plugins()
    created: list[Path] = []
    try:
        with use_plugins(plugins):  # tasks build their backbone through the same registry
            resolved = validate_components(config, plugins)
            check_preconditions(resolved.config)
            run_dir = prepare_run_dir(resolved.config, created)
            resume = resume_point(resolved.config, run_dir, resume)
            parts = build_fit_parts(resolved, kept_reasons(resolved.config, resume))
            resolved, config = parts.resolved, parts.resolved.config
            line = parts.defaults.line()
            if line and distributed.launch_rank() == 0:
                echo(line)
            loggers = build_loggers(resolved, run_dir)
            all_callbacks = fit_callbacks(plugins, resolved, parts, run_dir, callbacks)
            kwargs = trainer_kwargs(resolved, run_dir, parts.model)
            trainer = build_trainer(plugins, config, kwargs, all_callbacks, loggers, resume)
            write_config(trainer, run_dir, config, parts)
            ckpt_path = continue_from(run_dir, resume, echo)
            wall_s = fit(trainer, parts, ckpt_path, loggers, run_dir, config)
            summary = write_summary(trainer, resolved, parts, run_dir, wall_s)
            return TrainResult(run_dir, summary, bool(trainer.is_global_zero))
    except VisionkitError:
        for folder in created:  # a mistake found while building leaves no empty run behind (nor a file)
            if not any(p.is_file() or p.is_symlink() for p in folder.rglob("*")):
                for sub in [*sorted(folder.rglob("*"), reverse=True), folder]:  # the deepest first
                    with contextlib.suppress(OSError):
                        sub.rmdir()
        raise


def check_preconditions(config: RunConfig) -> None:
    """Strategy settings that cannot work on this machine, refused before anything is built."""
    if config.sync_batchnorm and _accelerator(config) not in ("gpu", "cuda"):
        raise UsageError(
            "--sync-batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernel); drop it on CPU"
        )
    if config.ema and config.strategy == "fsdp":
        raise UsageError(
            "--ema keeps a full copy of the model, which FSDP shards; use --strategy ddp with --ema"
        )


def resume_point(config: RunConfig, run_dir: Path, given: ResumePoint | None) -> ResumePoint | None:
    """The checkpoint ``--resume`` continues from: ``given`` (read by the caller) or read now, once."""
    if config.resume is None:
        return None
    if given is not None and str(given.path) == config.resume:
        return given
    from visionkit_core.training.resume import find_resume_checkpoint

    return find_resume_checkpoint(config.resume, str(run_dir))


def kept_reasons(config: RunConfig, resume: ResumePoint | None) -> dict[str, str]:
    """Why the config holds a batch size, lr or epochs: the checkpoint's when resuming with its value."""
    saved = (resume.meta.get("config") or {}) if resume is not None else {}
    return {
        k: "the checkpoint's (--resume)"
        for k in ("batch_size", "lr", "epochs")
        if getattr(config, k) is not None and saved.get(k) == getattr(config, k)
    }


def write_config(trainer: Any, run_dir: Path, config: RunConfig, parts: FitParts) -> None:
    """``config.yaml`` (rank 0): the resolved config, then what the run derived from its data."""
    import yaml

    if trainer.is_global_zero:
        derived = {
            "data_info": parts.info.to_dict(),
            "preprocessing": parts.preprocessing,
            "defaults": parts.defaults.record(),
        }
        text = yaml.safe_dump({DERIVED_KEY: derived}, sort_keys=False, default_flow_style=False)
        (run_dir / "config.yaml").write_text(config.to_yaml() + text, encoding="utf-8")


def continue_from(run_dir: Path, resume: ResumePoint | None, echo: Callable[[str], None]) -> str | None:
    """The checkpoint ``fit`` starts from: ``--resume``'s, or SLURM's after a requeue, or none."""
    if resume is not None:
        return str(resume.path)
    requeued = distributed.slurm_resume_checkpoint(run_dir)
    if requeued is not None:
        echo(f"visionkit: SLURM job requeued; continuing from {requeued}")
    return str(requeued) if requeued is not None else None


#: what torch says when an image has been downsampled below a layer's kernel
_TOO_SMALL = ("Kernel size can't be greater than actual input size", "Output size is too small")


def fit(
    trainer: Any, parts: FitParts, ckpt_path: str | None, loggers: list[Any], run_dir: Path, config: RunConfig
) -> float:
    """``trainer.fit`` (seconds it took; channels-last on GPUs); SIGTERM: exit 143; loggers are finished."""
    import torch
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    model = parts.model
    if _accelerator(config) in ("gpu", "cuda"):
        model = model.to(memory_format=torch.channels_last)
    model = torch.compile(model) if config.compile else model
    distributed.publish_run_dir(run_dir)
    started = time.perf_counter()
    failed = True
    try:
        trainer.fit(model, datamodule=parts.datamodule, ckpt_path=ckpt_path, weights_only=True)
        failed = False
    except SIGTERMException:  # Lightning exits 0 on SIGTERM; visionkit reports it and exits 143
        raise terminated(trainer, run_dir) from None
    except RuntimeError as err:
        if any(m in str(err) for m in _TOO_SMALL):  # the user's size, not our bug: say which and what to do
            size = config.image_size or "the dataset's default"
            raise UsageError(
                f"--image-size {size} is too small for backbone {config.backbone!r}: its layers shrink "
                f"the image below their kernels ({str(err).splitlines()[0][:120]}); "
                "give a larger --image-size (64 or more) or a backbone that downsamples less"
            ) from None
        raise
    finally:
        for logger in loggers:
            finish = getattr(logger, "visionkit_finish", None)
            if callable(finish):
                finish(failed=failed)
    return time.perf_counter() - started


def write_summary(
    trainer: Any, resolved: Resolved, parts: FitParts, run_dir: Path, wall_s: float
) -> dict[str, Any]:
    """``summary.json`` (rank 0): metrics, checkpoints, every rank's skipped samples, what the run was."""
    from visionkit_core.training.checkpoint import write_json

    local = {skipped_name(b) for b in bad_samples_of(parts.datamodule)}
    skipped = sorted(distributed.gather_skipped(trainer, local))
    summary = {
        **fit_summary(trainer, resolved.task_spec, skipped, wall_s),
        "class_names": list(parts.info.class_names),
        "image_size": parts.preprocessing.get("image_size", resolved.config.image_size),
        "backbone": resolved.backbone.qualname,
        "task": resolved.task.qualname,
        "dataset": resolved.dataset.qualname,
    }
    if trainer.is_global_zero:
        write_json(run_dir / "summary.json", summary)
    return summary
