"""The one place that turns a RunConfig into Lightning objects and runs them, for any task.

:func:`run_train` is a straight line of named steps, in LightningCLI's order: resolve every
name and check and convert every option once (:mod:`visionkit_core.run.resolve`; the
converted options travel in :class:`Resolved`), check the machine, prepare the run directory, read the
``--resume`` checkpoint once; then seed and build data -> task (with the :class:`DataInfo` the
data gives) -> loggers -> callbacks -> Trainer, fit, and write ``summary.json``. The task is
known only through its :class:`TaskSpec`.
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
from visionkit_core.run.resolve import (
    DATA_RECIPE,
    DATASET_RESERVED,
    TASK_RECIPE,
    Resolved,
    recipe_values,
    trainer_recipe,
    validate_components,
)
from visionkit_core.run.resolve import resolve_components as resolve_components  # re-exported
from visionkit_core.run.resolve import resolve_data as resolve_data  # re-exported
from visionkit_core.training.checkpoint import FORMAT_VERSION
from visionkit_core.training.distributed import (
    fsdp_strategy,
    gather_skipped,
    launch_rank,
    publish_run_dir,
    shared_run_dir,
    slurm_resume_checkpoint,
)

if TYPE_CHECKING:
    from visionkit_core.training.resume import ResumePoint


def default_run_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.backbone or "").strip("-")
    return Path("runs") / f"{stamp}-{safe}"


def prepare_run_dir(config: RunConfig, created: list[Path] | None = None) -> Path:
    """Create the run directory (appended to ``created`` when new); refuse to overwrite an
    earlier run unless resuming."""
    run_dir = (
        Path(config.run_dir)
        if config.run_dir
        else shared_run_dir(default_run_dir(config), config.backbone or "")
    )
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {str(run_dir)!r} is a file; choose a directory")
    continuing = config.resume is not None or slurm_resume_checkpoint(run_dir) is not None
    if (run_dir / "config.yaml").exists() and not continuing and launch_rank() == 0:
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


def build_datamodule(
    config: RunConfig, dataset: Component, root: str | None, options: dict[str, Any] | None = None
) -> Any:
    """Call the dataset factory with the run's data settings and its ``--set data.*`` options
    (``options`` already converted, or ``config``'s converted here to the factory's annotated types)."""
    factory = dataset.load()
    if options is None:
        options = check_options("data", dataset.qualname, factory, config.section("data"), DATASET_RESERVED)
    provided = {
        "root": root,
        **({"batch_size": config.batch_size} if config.batch_size is not None else {}),
        "image_size": config.image_size,
        "val_split": config.val_split,
        "seed": config.seed,
        "num_workers": config.num_workers,
        "on_bad_image": config.on_bad_image,
        **recipe_values(config, DATA_RECIPE),
    }
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
    config = resolved.config
    provided = {
        **info.task_kwargs(),
        "backbone": resolved.backbone.qualname,
        **({"lr": config.lr} if config.lr is not None else {}),
        "pretrained": config.pretrained,
        "weights": config.weights or config.init_from,
        "backbone_options": resolved.options["backbone"],
        **recipe_values(config, TASK_RECIPE),
    }
    factory = resolved.task.load()
    if (config.weights or config.init_from) and not accepts(factory, "weights"):
        flag = "--weights" if config.weights else "--init-from"
        raise UsageError(
            f"{flag}: task {resolved.task.qualname!r} (plugin {resolved.task.origin.plugin}) takes no "
            "weights; drop the flag, or give the task a `weights` argument "
            "(the kit's TaskBase.load_weights_into loads it)"
        )
    return call_with_accepted(factory, provided, resolved.options["task"])


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


def run_preprocessing(datamodule: Any, model: Any) -> dict[str, Any]:
    """The model's normalisation with the data's predict/export preprocessing (plain values)."""
    data = datamodule.preprocessing() if callable(getattr(datamodule, "preprocessing", None)) else {}
    from visionkit_core.training.runtime import plain

    return dict(plain({**dict(getattr(model, "preprocessing", None) or {}), **dict(data or {})}))


@dataclass
class FitParts:
    """What a fit is built from (``train`` and ``tune``): the datamodule, what it says, the task,
    and the resolved run with the batch size, lr and epochs chosen from the data (``defaults``)."""

    datamodule: Any
    info: DataInfo
    model: Any
    preprocessing: dict[str, Any]
    resolved: Resolved
    defaults: FitDefaults


def build_fit_parts(resolved: Resolved, kept: Mapping[str, str] | None = None) -> FitParts:
    """Seed, then build data, choose what the user left to the data (:mod:`~visionkit_core.run.defaults`),
    then the task (with the :class:`DataInfo` the data gives); fit nothing. ``kept``: the reason
    recorded for a value the config holds, per field (default: "given")."""
    import lightning as L

    from visionkit_core.training.runtime import quiet_lightning

    config, spec = resolved.config, resolved.task_spec
    quiet_lightning()
    L.seed_everything(config.seed, workers=True, verbose=False)
    first = config if config.batch_size is not None else replace(config, batch_size=spec.default_batch_size)
    datamodule = build_datamodule(first, resolved.dataset, resolved.data_root, resolved.options["data"])
    info = data_info_of(datamodule, resolved.dataset, spec)
    defaults = choose(
        config,
        spec,
        info.train_size,
        world=world_size(config),
        epochs_reason=resolved.epochs_reason,
        takes_batch=accepts(resolved.dataset.load(), "batch_size"),
        kept=dict(kept or {}),
    )
    resolved = replace(resolved, config=defaults.apply(config))
    config = resolved.config
    if config.batch_size is not None and config.batch_size != first.batch_size:
        datamodule = _rebatch(datamodule, resolved)
    model = build_task(resolved, info)
    _check_freeze(config, model, resolved.task.qualname)
    return FitParts(datamodule, info, model, run_preprocessing(datamodule, model), resolved, defaults)


def _rebatch(datamodule: Any, resolved: Resolved) -> Any:
    """The datamodule with the chosen batch size: set as Lightning's Tuner sets it (the ``batch_size``
    attribute, and the ``hparams`` entry a checkpoint records), else built again with it."""
    config, batch = resolved.config, resolved.config.batch_size
    if not hasattr(datamodule, "batch_size"):
        return build_datamodule(config, resolved.dataset, resolved.data_root, resolved.options["data"])
    datamodule.batch_size = batch
    hparams = getattr(datamodule, "hparams", None)
    if hparams is not None and "batch_size" in hparams:
        hparams["batch_size"] = batch
    return datamodule


def _check_freeze(config: RunConfig, model: Any, task_name: str) -> None:
    """``--freeze-backbone`` freezes ``model.backbone`` (BackboneFinetuning): a task needs one."""
    if not config.freeze_backbone:
        return
    import torch

    if not isinstance(getattr(model, "backbone", None), torch.nn.Module):
        raise UsageError(
            f"--freeze-backbone: task {task_name!r} has no `backbone` module (Lightning's "
            "BackboneFinetuning freezes `pl_module.backbone`); drop the flag for this task"
        )


def build_loggers(resolved: Resolved, run_dir: Path) -> list[Any]:
    """The ``--logger`` loggers, each given the run directory and name."""
    provided = {"run_dir": run_dir, "run_name": run_dir.name}
    return [_build(c, provided, resolved.options[f"logger:{c.qualname}"]) for c in resolved.loggers]


def fit_callbacks(
    plugins: Plugins, resolved: Resolved, parts: FitParts, run_dir: Path, extra: Sequence[Any] = ()
) -> list[Any]:
    """The callbacks of a fit: the core's (checkpoint metadata, plain hyperparameters), the plugins'
    defaults, the task's evaluation, ``extra``, then ``--callback``."""
    from visionkit_core.training.runtime import RunMetadata

    model, info = parts.model, parts.info
    evaluation = getattr(model, "evaluation_callbacks", None)
    provided = {"run_dir": run_dir, "class_names": info.class_names, "data_info": info}
    return [
        RunMetadata(run_meta(resolved, info, parts.preprocessing)),
        *trainer_callbacks(plugins, "fit", run_dir, resolved.task_spec),
        *(evaluation(run_dir) if callable(evaluation) else []),
        *extra,
        *(_build(c, provided, resolved.options[f"callback:{c.qualname}"]) for c in resolved.callbacks),
    ]


def _build(comp: Component, provided: dict[str, Any], options: dict[str, Any]) -> Any:
    """Call a logger/callback factory with what visionkit provides and its converted options."""
    return call_with_accepted(comp.load(), provided, options)


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
        strategy = fsdp_strategy(model, accelerator, config.activation_checkpointing)
    return {
        "max_epochs": config.epochs,
        "accelerator": accelerator,
        "devices": _devices(config.devices),
        "strategy": strategy,
        "num_nodes": config.num_nodes,
        "precision": _precision(config, accelerator),
        "deterministic": config.deterministic,
        "sync_batchnorm": config.sync_batchnorm,
        "default_root_dir": str(run_dir),
        "log_every_n_steps": 10,
        "enable_model_summary": False,
        **trainer_recipe(config),
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
    """The Trainer: callbacks and loggers set, plugins' ``visionkit_configure_trainer`` applied, atomic
    checkpoint saves and safe loads (the ``--resume`` checkpoint already read is not read again)."""
    from visionkit_core.training.checkpoint_io import with_atomic_io

    kwargs = {**kwargs, "callbacks": callbacks, "logger": loggers or False}
    if not any(is_progress_bar(cb) for cb in callbacks):
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


def run_train(
    config: RunConfig,
    *,
    plugins: Plugins | None = None,
    echo: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
    resume: ResumePoint | None = None,
) -> TrainResult:
    """Assemble and run one training run; return the run directory and summary.

    ``callbacks`` are extra Lightning callbacks for this run only, added after the run's own
    (a sweep's pruning callback); like the Trainer object itself, they are not part of config.yaml.
    ``resume`` is the checkpoint ``config.resume`` names, when the caller has read it already.
    """
    plugins = plugins or get_plugins()
    created: list[Path] = []
    try:
        with use_plugins(plugins):  # tasks build their backbone through the same registry
            return _fit(config, plugins, echo, created, callbacks, resume)
    except VisionkitError:
        for folder in created:  # a mistake found while building leaves no empty run behind
            _remove_empty_tree(folder)
        raise


def _remove_empty_tree(folder: Path) -> None:
    """Remove ``folder`` if it holds no files at all (only empty folders); never delete a file."""
    if any(p.is_file() or p.is_symlink() for p in folder.rglob("*")):
        return
    for sub in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _fit(
    config: RunConfig,
    plugins: Plugins,
    echo: Callable[[str], None],
    created: list[Path],
    extra_callbacks: Sequence[Any],
    resume: ResumePoint | None,
) -> TrainResult:
    """LightningCLI's order: everything checked before anything is built, then build, fit, report."""
    resolved = validate_components(config, plugins)
    config = resolved.config
    check_preconditions(config)
    run_dir = prepare_run_dir(config, created)
    resume = resume_point(config, run_dir, resume)
    parts = build_fit_parts(resolved, kept_reasons(config, resume))
    resolved, config = parts.resolved, parts.resolved.config
    line = parts.defaults.line()
    if line and launch_rank() == 0:
        echo(line)
    loggers = build_loggers(resolved, run_dir)
    callbacks = fit_callbacks(plugins, resolved, parts, run_dir, extra_callbacks)
    kwargs = trainer_kwargs(resolved, run_dir, parts.model)
    trainer = build_trainer(plugins, config, kwargs, callbacks, loggers, resume)
    write_config(trainer, run_dir, config, parts)
    ckpt_path = continue_from(config, run_dir, resume, echo)
    wall_s = fit(trainer, parts, ckpt_path, loggers, run_dir, config)
    summary = write_summary(trainer, resolved, parts, run_dir, wall_s)
    return TrainResult(run_dir, summary, bool(trainer.is_global_zero))


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
    if resume is None:
        return {}
    saved = resume.meta.get("config") or {}
    return {
        k: "the checkpoint's (--resume)"
        for k in ("batch_size", "lr", "epochs")
        if getattr(config, k) is not None and saved.get(k) == getattr(config, k)
    }


def write_config(trainer: Any, run_dir: Path, config: RunConfig, parts: FitParts) -> None:
    """``config.yaml``: the resolved config, and what the run derived from its data (rank 0): the
    data's values, preprocessing, and the batch size, lr and epochs with why (``defaults``)."""
    if trainer.is_global_zero:
        derived = {
            DERIVED_KEY: {
                "data_info": parts.info.to_dict(),
                "preprocessing": parts.preprocessing,
                "defaults": parts.defaults.record(),
            }
        }
        (run_dir / "config.yaml").write_text(config.to_yaml() + yaml_dump(derived), encoding="utf-8")


def continue_from(
    config: RunConfig, run_dir: Path, resume: ResumePoint | None, echo: Callable[[str], None]
) -> str | None:
    """The checkpoint ``fit`` starts from: ``--resume``'s, or SLURM's after a requeue, or none."""
    if resume is not None:
        return str(resume.path)
    requeued = slurm_resume_checkpoint(run_dir)
    if requeued is not None:
        echo(f"visionkit: SLURM job requeued; continuing from {requeued}")
        return str(requeued)
    return None


#: what torch says when an image has been downsampled below a layer's kernel
_TOO_SMALL = ("Kernel size can't be greater than actual input size", "Output size is too small")


def fit(
    trainer: Any, parts: FitParts, ckpt_path: str | None, loggers: list[Any], run_dir: Path, config: RunConfig
) -> float:
    """``trainer.fit`` (seconds it took); SIGTERM: exit 143 (after ``last.ckpt``); loggers are finished."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    model = _performance_layout(parts.model, _accelerator(config), config.compile)
    publish_run_dir(run_dir)
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
    """``summary.json`` (rank 0): every rank's skipped samples, metrics, checkpoints, what the run was."""
    from visionkit_core.training.checkpoint import write_json

    local = {skipped_name(b) for b in bad_samples_of(parts.datamodule)}
    skipped = sorted(gather_skipped(trainer, local))
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


def is_progress_bar(callback: Any) -> bool:
    from lightning.pytorch.callbacks import ProgressBar

    return isinstance(callback, ProgressBar)


def yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
