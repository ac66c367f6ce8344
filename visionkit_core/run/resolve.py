"""Resolve and validate a run before anything is built: every name (unknown ones fail with suggestions),
every ``--set`` option (checked and converted once; they travel in :class:`Resolved`), every recipe flag.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core.errors import UsageError
from visionkit_core.plugin.contract import TaskSpec, task_spec_of
from visionkit_core.plugin.manager import Plugins
from visionkit_core.plugin.registry import Component
from visionkit_core.run.build import BACKBONE_RESERVED, accepts
from visionkit_core.run.config import RunConfig, check_options


def _flags(*names: str) -> dict[str, str]:
    """Each name with the flag that sets it (``batch_size`` -> ``--batch-size``)."""
    return {name: f"--{name.replace('_', '-')}" for name in names}


#: Arguments visionkit passes a factory itself, with what sets each (not ``--set`` options).
DATASET_RESERVED = {
    "root": "--data",
    **_flags("batch_size", "image_size", "val_split", "seed", "num_workers", "on_bad_image"),
}
TASK_RESERVED = {
    **_flags("backbone", "lr", "pretrained", "weights"),
    **dict.fromkeys(("num_classes", "class_names", "ignore_index", "label_map"), "the dataset"),
    "backbone_options": "--set backbone.KEY=VALUE",
    "preprocessing": "the backbone",
}
LOGGER_RESERVED = {"run_dir": "--run-dir", "run_name": "--run-dir"}
CALLBACK_RESERVED = {"run_dir": "--run-dir", "class_names": "the dataset", "data_info": "the dataset"}
TRAINER_MANAGED = {
    **_flags("accelerator", "devices", "strategy", "num_nodes", "precision", "deterministic"),
    "max_epochs": "--epochs",
    "callbacks": "--callback",
    "logger": "--logger",
    "default_root_dir": "--run-dir",
}
#: Training-recipe fields passed to the dataset / task factory under their own name, only when set
#: (``None`` leaves the factory's default); a factory that does not take a set one is refused.
#: ``trainer``: the recipe flags that are Trainer arguments.
RECIPE = {
    "data": _flags("augment", "sampler", "cache"),
    "task": _flags("mixup", "cutmix", "label_smoothing", "class_weights"),
    "trainer": {
        "accumulate_grad_batches": "--accumulate-grad-batches",
        "gradient_clip_val": "--gradient-clip",
    },
}


@dataclass
class Resolved:
    """Everything a config names, resolved and checked before anything heavy is built; ``config`` (the
    task's default backbone and data filled in) is not changed afterwards."""

    config: RunConfig
    task_spec: TaskSpec
    backbone: Component
    task: Component
    dataset: Component
    data_root: str | None
    loggers: list[Component] = field(default_factory=list)
    callbacks: list[Component] = field(default_factory=list)
    #: every section's ``--set`` options, checked and converted once: ``backbone``, ``task``, ``data``,
    #: ``trainer``, ``logger:<name>``, ``callback:<name>``
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: where ``config.epochs`` came from when the user gave none (the dataset's or task's default)
    epochs_reason: str | None = None


def resolve_components(config: RunConfig, plugins: Plugins) -> Resolved:
    """Resolve every name in ``config``; unknown names fail here, with suggestions."""
    reg = plugins.registry
    task = reg.resolve("task", config.task)
    # names the user gave are looked up before the task's module is imported (it imports torch),
    # so a typo is reported in a fraction of a second
    given = reg.resolve("backbone", config.backbone) if config.backbone is not None else None
    loggers = [reg.resolve("logger", n) for n in config.loggers]
    callbacks = [reg.resolve("callback", n) for n in config.callbacks]
    given_data = resolve_data(config.data, plugins, task.qualname) if config.data is not None else None
    spec = task_spec_of(task.load())
    if spec is None:
        raise UsageError(
            f"task {task.qualname!r} from {task.origin.describe()} declares no "
            "`visionkit_task = TaskSpec(...)`; see docs/plugins.md, 'Writing a task'"
        )
    backbone_name = config.backbone if config.backbone is not None else spec.default_backbone
    if not backbone_name:
        raise UsageError(f"task {task.qualname!r} has no default backbone; pass --backbone NAME")
    data_name = config.data if config.data is not None else spec.default_data
    if not data_name:
        raise UsageError(f"task {task.qualname!r} has no demo data; pass --data DIR or a dataset name")
    backbone = given or reg.resolve("backbone", backbone_name)
    dataset, root = given_data or resolve_data(data_name, plugins, task.qualname)
    epochs, epochs_reason = config.epochs, None
    if epochs is None:  # without the dataset's or the task's own, the run chooses from the data's size
        own = getattr(dataset.load(), "default_epochs", None)
        epochs = own or spec.default_epochs
        whose = f"dataset {dataset.qualname!r}" if own else f"the {spec.name} task"
        epochs_reason = f"{whose}'s default_epochs" if epochs else None
    config = dataclasses.replace(
        config, backbone=backbone_name, data=data_name, epochs=int(epochs) if epochs else None
    )
    return Resolved(
        config, spec, backbone, task, dataset, root, loggers, callbacks, epochs_reason=epochs_reason
    )


def validate_components(config: RunConfig, plugins: Plugins) -> Resolved:
    """Resolve names and check and convert every ``--set`` option against its factory, building nothing."""
    resolved = resolve_components(config, plugins)
    config, options = resolved.config, resolved.options
    for kind, comp, reserved in (
        ("backbone", resolved.backbone, BACKBONE_RESERVED),
        ("task", resolved.task, TASK_RESERVED),
        ("data", resolved.dataset, DATASET_RESERVED),
    ):
        options[kind] = check_options(kind, comp.qualname, comp.load(), config.section(kind), reserved)
    named = {"logger": resolved.loggers, "callback": resolved.callbacks}
    for kind, reserved in (("logger", LOGGER_RESERVED), ("callback", CALLBACK_RESERVED)):
        for c in named[kind]:
            section = config.section(kind, c.qualname)
            options[f"{kind}:{c.qualname}"] = check_options(
                f"{kind}.{c.name}", c.qualname, c.load(), section, reserved
            )
    for kind, comps in named.items():  # options for a logger/callback not selected are a mistake
        chosen = {c.name for c in comps} | {c.qualname for c in comps}
        for name in config.options.get(kind) or {}:
            if name not in chosen:
                raise UsageError(
                    f"--set {kind}.{name}.*: {kind} {name!r} is not selected; add --{kind} {name}"
                )
    _check_recipe(config, resolved)
    if trainer := config.section("trainer"):
        import lightning as L

        options["trainer"] = check_options(
            "trainer", "lightning.Trainer", L.Trainer, trainer, TRAINER_MANAGED
        )
    return resolved


def recipe_values(config: RunConfig, section: str) -> dict[str, Any]:
    """The recipe flags the config sets (not ``None``) for ``section``, by argument name."""
    if section == "trainer":
        accumulate = config.accumulate_grad_batches if config.accumulate_grad_batches != 1 else None
        values = {"accumulate_grad_batches": accumulate, "gradient_clip_val": config.gradient_clip}
    else:
        values = {k: getattr(config, k) for k in RECIPE[section]}
    return {k: v for k, v in values.items() if v is not None}


def _check_recipe(config: RunConfig, resolved: Resolved) -> None:
    """A recipe flag the chosen task or dataset cannot take is refused, never silently ignored;
    setting one both as a flag and through ``--set`` is ambiguous."""
    for section, comp in (("data", resolved.dataset), ("task", resolved.task), ("trainer", None)):
        for name in recipe_values(config, section):
            flag = RECIPE[section][name]
            if comp is not None and not accepts(comp.load(), name):
                raise UsageError(
                    f"{flag}: {section} {comp.qualname!r} ({comp.origin.describe()}) does not take {name!r}; "
                    f"drop {flag}, or choose a {'dataset' if section == 'data' else 'task'} that supports it"
                )
            if name in config.section(section):
                raise UsageError(f"{flag} and --set {section}.{name} both set {name}; give one of them")


def resolve_data(data: str, plugins: Plugins, task: str | None = None) -> tuple[Component, str | None]:
    """``--data`` is a registered dataset name, or a file or folder a dataset plugin claims (``task``, the
    run's task name, goes to the claim hook). A name in a dataset namespace (``litdata:runs/shards``,
    ``litdata:s3://bucket/x``) is a name even when it holds a path separator."""
    reg = plugins.registry
    path = Path(data).expanduser()
    prefix, sep, _ = data.partition(":")
    if sep and not path.exists() and prefix in reg.namespaces("dataset") and prefix != "visionkit":
        return reg.resolve("dataset", data), None
    if not (os.sep in data or data.startswith((".", "~"))):  # not explicitly a path: a name first
        try:  # a registered dataset name wins over a folder of that name (write ./NAME for the folder)
            return reg.resolve("dataset", data), None
        except UsageError as err:
            if sep:
                raise
            if not path.exists():
                names = ", ".join(c.name for c in reg.static_components("dataset"))
                raise UsageError(
                    f"--data {data!r}: no such file or folder, and no dataset of that name ({err}); "
                    f"give a data folder or one of: {names}"
                ) from None
    if not path.exists():
        raise UsageError(f"--data {data!r}: folder or file not found; give an existing data folder or file")
    claimed = plugins.claim_data(path, task)
    if claimed is None:
        kind = "folder" if path.is_dir() else "file"
        raise UsageError(
            f"--data {data!r}: no installed dataset plugin recognises this {kind}; give a folder in one "
            "of the layouts `visionkit datasets list` describes, or a dataset name"
        )
    return reg.resolve("dataset", claimed), str(path)
