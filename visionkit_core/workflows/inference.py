"""Use a checkpoint alone, for any task: rebuild its task, check the data, build its datamodule.

The model is rebuilt from the checkpoint's plain hyperparameters through the registry (never through
Lightning's ``_instantiator``/``_class_path`` hooks); the weights are read with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionkit_core.errors import CheckpointError, UnknownNameError, UsageError
from visionkit_core.plugin.contract import DataInfo, TaskSpec, task_spec_of
from visionkit_core.plugin.manager import Plugins, get_plugins
from visionkit_core.plugin.registry import Component
from visionkit_core.run.build import call_with_accepted
from visionkit_core.run.config import RunConfig, apply_mapping
from visionkit_core.training.checkpoint import META_KEY, safe_load


@dataclass
class Loaded:
    """A task rebuilt from a checkpoint, with the checkpoint's description of itself."""

    model: Any
    meta: dict[str, Any]
    config: RunConfig
    path: Path

    task: Component
    spec: TaskSpec

    @property
    def data_info(self) -> DataInfo:
        info = self.meta.get("data_info")
        if isinstance(info, dict):
            return DataInfo.from_dict(info)
        return DataInfo(class_names=list(self.meta.get("class_names", [])))  # format 1

    @property
    def class_names(self) -> list[str]:
        return list(self.data_info.class_names)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.meta["preprocessing"])

    @property
    def image_size(self) -> int:
        size = self.preprocessing.get("image_size", self.config.image_size)
        if size is None:
            raise CheckpointError(f"checkpoint {str(self.path)!r} does not record its input size")
        return int(size)


def run_dir_of(ckpt: Path) -> Path:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` -> ``<run>``)."""
    parent = ckpt.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def load_checkpoint(path: str | Path, plugins: Plugins | None = None) -> Loaded:
    """Rebuild the model a visionkit checkpoint describes, with its trained weights."""
    p = Path(path)
    ckpt = safe_load(p)
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or not ("data_info" in meta or "class_names" in meta):
        raise CheckpointError(
            f"{str(p)!r} is not a visionkit checkpoint (no '{META_KEY}' metadata); "
            "use a .ckpt written by `visionkit train`"
        )
    plugins = plugins or get_plugins()
    task_name = meta.get("components", {}).get("task", {}).get("name") or meta.get("task", "classification")
    try:
        task = plugins.registry.resolve("task", task_name)
        plugins.registry.resolve("backbone", meta["backbone"])
    except UnknownNameError as err:
        needed = ", ".join(
            f"{c['name']} from {c['distribution']} {c['version']}"
            for c in meta.get("components", {}).values()
        )
        raise CheckpointError(
            f"checkpoint {str(p)!r} needs a component that is not installed ({err}); "
            f"it was written with: {needed}"
        ) from None
    hparams = {k: v for k, v in dict(ckpt.get("hyper_parameters", {})).items() if not str(k).startswith("_")}
    for key in ("pretrained", "weights"):  # the checkpoint holds the weights: never download or re-read
        hparams.pop(key, None)
    model = call_with_accepted(task.load(), {"pretrained": False, "weights": None}, hparams)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {str(p)!r} does not match its own model: {first}") from None
    config = apply_mapping(RunConfig(), meta.get("config", {}), f"checkpoint {str(p)!r}")
    spec = task_spec_of(task.load())
    if spec is None:
        raise CheckpointError(f"checkpoint {str(p)!r}: task {task.qualname!r} declares no TaskSpec")
    if isinstance(getattr(model, "preprocessing", None), dict):
        model.preprocessing = {**model.preprocessing, **dict(meta.get("preprocessing") or {})}
    return Loaded(model, meta, config, p, task, spec)


def check_split(dm: Any, dataset: str, split: str) -> None:
    """Refuse a split the data does not have, naming dataset and split (before any work)."""
    from visionkit_core.run.assemble import data_spec_of

    splits = data_spec_of(dm).splits
    if split not in splits:
        raise UsageError(
            f"dataset {dataset!r} has no {split} split (it has: {', '.join(splits)}); "
            f"give --data with a {split} split"
        )


def check_data_info(expected: DataInfo, found: DataInfo, needs: Sequence[str], data: str) -> None:
    """Every data-derived value the task needs must equal the checkpoint's: the class-to-index mapping,
    each value in ``TaskSpec.needs`` (e.g. keypoint names) and the ignore index and label map where the
    checkpoint recorded them; what describes the data set itself (``class_counts``...) may differ."""
    want_classes, have_classes = list(expected.class_names), list(found.class_names)
    if want_classes != have_classes:
        missing = [c for c in want_classes if c not in have_classes]
        extra = [c for c in have_classes if c not in want_classes]
        parts = [f"missing from the data: {', '.join(missing)}"] if missing else []
        parts += [f"not in the checkpoint: {', '.join(extra)}"] if extra else []
        parts = parts or [
            f"same classes in another order (checkpoint: {', '.join(want_classes)}; "
            f"data: {', '.join(have_classes)})"
        ]
        raise UsageError(f"classes of {data!r} differ from the checkpoint's: {'; '.join(parts)}")
    want, have = expected.task_kwargs(), found.task_kwargs()
    names = [n for n in needs if n not in ("class_names", "num_classes")]
    names += [n for n in ("ignore_index", "label_map") if n in want and n not in names]
    for name in names:
        if name in want and want[name] != have.get(name):
            raise UsageError(
                f"{name} of {data!r} differ from the checkpoint's (checkpoint: {want[name]!r}; "
                f"data: {have.get(name)!r}); use data made for this model, or train on this data"
            )


def datamodule_for(loaded: Loaded, data: str | None, plugins: Plugins | None = None, **overrides: Any) -> Any:
    """The checkpoint's datamodule (or one over ``data``), with its input size and classes checked."""
    from visionkit_core.run.assemble import build_datamodule, data_info_of
    from visionkit_core.run.resolve import resolve_data

    plugins = plugins or get_plugins()
    config = apply_mapping(
        loaded.config, {k: v for k, v in overrides.items() if v is not None}, "command line"
    )
    source = data or config.data or loaded.spec.default_data
    if source is None:
        raise UsageError(f"{loaded.path} records no data set; pass --data DIR")
    dataset, root = resolve_data(source, plugins, loaded.task.qualname)
    trained_on = loaded.meta.get("components", {}).get("dataset", {}).get("name")
    if data is not None and dataset.qualname != trained_on:
        config = apply_mapping(config, {"options": {}}, "command line")
        config.options.pop("data", None)  # the training dataset's options don't apply to another one
    dm = build_datamodule(config, dataset, root)
    check_data_info(loaded.data_info, data_info_of(dm, dataset, loaded.spec), loaded.spec.needs, source)
    return dm
