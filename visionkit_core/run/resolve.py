"""Resolve and validate a run before anything is built: every name, every option, every recipe flag.

:func:`validate_components` resolves the task, backbone, data, loggers and callbacks a
:class:`RunConfig` names (unknown names fail with suggestions), then checks and converts every
``--set`` section once against its factory; the converted options travel in :class:`Resolved`
to the assembler. Recipe flags a factory cannot take are refused, never ignored.
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
    "ignore_index": "the dataset",
    "label_map": "the dataset",
}
#: Training-recipe fields passed to the dataset / task factory under their own name, only when set
#: (``None`` leaves the factory's default); a factory that does not take a set one is refused.
DATA_RECIPE = {"augment": "--augment", "sampler": "--sampler", "cache": "--cache"}
TASK_RECIPE = {
    "mixup": "--mixup",
    "cutmix": "--cutmix",
    "label_smoothing": "--label-smoothing",
    "class_weights": "--class-weights",
}
#: Recipe flags that are Trainer arguments.
TRAINER_RECIPE = {
    "accumulate_grad_batches": "--accumulate-grad-batches",
    "gradient_clip_val": "--gradient-clip",
}
LOGGER_RESERVED = {"run_dir": "--run-dir", "run_name": "--run-dir"}
CALLBACK_RESERVED = {"run_dir": "--run-dir", "class_names": "the dataset", "data_info": "the dataset"}
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
    """Everything a config names, resolved and checked before anything heavy is built.

    ``config`` is the resolved config (the task's default backbone and data filled in); it
    is not changed afterwards.
    """

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


def task_spec(task: Component) -> TaskSpec:
    """The :class:`TaskSpec` a task factory declares; a task without one is the plugin's bug."""
    spec = task_spec_of(task.load())
    if spec is None:
        raise UsageError(
            f"task {task.qualname!r} from {task.origin.describe()} declares no "
            "`visionkit_task = TaskSpec(...)`; see docs/plugins.md, 'Writing a task'"
        )
    return spec


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
    spec = task_spec(task)
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
        if epochs:
            whose = f"dataset {dataset.qualname!r}" if own else f"the {spec.name} task"
            epochs_reason = f"{whose}'s default_epochs"
    resolved_config = dataclasses.replace(
        config, backbone=backbone_name, data=data_name, epochs=int(epochs) if epochs else None
    )
    return Resolved(
        resolved_config, spec, backbone, task, dataset, root, loggers, callbacks, epochs_reason=epochs_reason
    )


def validate_components(config: RunConfig, plugins: Plugins) -> Resolved:
    """Resolve names and check and convert every ``--set`` option against its factory, building nothing."""
    resolved = resolve_components(config, plugins)
    config = resolved.config
    checks: list[tuple[str, str, Component, dict[str, Any], dict[str, str]]] = [
        ("backbone", "backbone", resolved.backbone, config.section("backbone"), BACKBONE_RESERVED),
        ("task", "task", resolved.task, config.section("task"), TASK_RESERVED),
        ("data", "data", resolved.dataset, config.section("data"), DATASET_RESERVED),
    ]
    for kind, comps, reserved in (
        ("logger", resolved.loggers, LOGGER_RESERVED),
        ("callback", resolved.callbacks, CALLBACK_RESERVED),
    ):
        checks += [
            (f"{kind}:{c.qualname}", f"{kind}.{c.name}", c, config.section(kind, c.qualname), reserved)
            for c in comps
        ]
    for key, section, comp, options, reserved in checks:
        resolved.options[key] = check_options(section, comp.qualname, comp.load(), options, reserved)
    _check_sections(config, resolved)
    _check_recipe(config, resolved)
    if trainer := config.section("trainer"):
        import lightning as L

        resolved.options["trainer"] = check_options(
            "trainer", "lightning.Trainer", L.Trainer, trainer, TRAINER_MANAGED
        )
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


def recipe_values(config: RunConfig, fields: dict[str, str]) -> dict[str, Any]:
    """The recipe ``fields`` the config sets (not ``None``), by name."""
    return {k: getattr(config, k) for k in fields if getattr(config, k) is not None}


def _check_recipe(config: RunConfig, resolved: Resolved) -> None:
    """A recipe flag the chosen task or dataset cannot take is refused, never silently ignored;
    setting one both as a flag and through ``--set`` is ambiguous."""
    targets = (("data", resolved.dataset, DATA_RECIPE), ("task", resolved.task, TASK_RECIPE))
    for section, comp, fields in targets:
        factory = comp.load()
        for name in recipe_values(config, fields):
            flag = fields[name]
            if not accepts(factory, name):
                raise UsageError(
                    f"{flag}: {section} {comp.qualname!r} ({comp.origin.describe()}) does not take {name!r}; "
                    f"drop {flag}, or choose a {'dataset' if section == 'data' else 'task'} that supports it"
                )
            if name in config.section(section):
                raise UsageError(f"{flag} and --set {section}.{name} both set {name}; give one of them")
    trainer = config.section("trainer")
    for name, flag in TRAINER_RECIPE.items():
        if name in trainer and trainer_recipe(config).get(name) is not None:
            raise UsageError(f"{flag} and --set trainer.{name} both set {name}; give one of them")


def trainer_recipe(config: RunConfig) -> dict[str, Any]:
    """The Trainer arguments of the recipe flags the config sets."""
    values: dict[str, Any] = {}
    if config.accumulate_grad_batches != 1:
        values["accumulate_grad_batches"] = config.accumulate_grad_batches
    if config.gradient_clip is not None:
        values["gradient_clip_val"] = config.gradient_clip
    return values


def resolve_data(data: str, plugins: Plugins, task: str | None = None) -> tuple[Component, str | None]:
    """``--data`` is a registered dataset name, or a file or folder a dataset plugin claims.

    A name in a dataset namespace (``litdata:runs/shards``, ``litdata:s3://bucket/x``) is a name
    even when it holds a path separator. ``task`` (the run's task name) goes to the claim hook.
    """
    reg = plugins.registry
    path = Path(data).expanduser()
    prefix, sep, _ = data.partition(":")
    if sep and not path.exists() and prefix in reg.namespaces("dataset") and prefix != "visionkit":
        return reg.resolve("dataset", data), None
    explicit_path = os.sep in data or data.startswith((".", "~"))
    if not explicit_path and (":" in data or not path.exists()):
        try:
            return reg.resolve("dataset", data), None
        except UsageError as err:
            if ":" in data or path.exists():
                raise
            names = ", ".join(c.name for c in reg.static_components("dataset"))
            raise UsageError(
                f"--data {data!r}: no such file or folder, and no dataset of that name ({err}); "
                f"give a data folder or one of: {names}"
            ) from None
    if not explicit_path:
        try:  # a registered dataset name wins over a folder of that name (write ./NAME for the folder)
            return reg.resolve("dataset", data), None
        except UsageError:
            pass
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
