"""visionkit: a plugin-based framework for training computer-vision models on Lightning.

The public API plugins use (nothing else in ``visionkit_core`` is); importing it imports no torch,
lightning, timm or wandb: the helpers that need them are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from visionkit_core.errors import (
    AmbiguousNameError,
    CheckpointError,
    ConfigError,
    ConflictError,
    MissingDependencyError,
    PluginLoadError,
    UnknownNameError,
    UsageError,
    VisionkitError,
)
from visionkit_core.plugin.contract import (
    SPLITS,
    BadSample,
    DataInfo,
    DataSpec,
    ExportSpec,
    FeatureLevel,
    MediaSample,
    Prediction,
    Sample,
    TaskSpec,
    VisionData,
    VisionTask,
    task_spec_of,
)
from visionkit_core.plugin.hookspecs import HOOKSPEC_VERSION, hookimpl
from visionkit_core.plugin.registry import Registrar

if TYPE_CHECKING:
    from visionkit_core.errors import require
    from visionkit_core.kit.media import (
        log_figure,
        never_fail,
        new_figure,
        prediction_grid,
        save_png,
        to_display,
        write_csv,
    )
    from visionkit_core.kit.weights import (
        load_weights,
        pretrained_unavailable,
        probe_url,
        read_state_dict,
        torch_hub_checkpoint,
    )
    from visionkit_core.run.build import build_backbone, call_with_accepted
    from visionkit_core.training.checkpoint import (
        atomic_link,
        atomic_save,
        atomic_write_bytes,
        safe_load,
        write_json,
    )

__version__ = "0.2.0"

#: Public helpers imported on first use: name -> module (their types: the TYPE_CHECKING imports above).
_LAZY = {
    name: f"visionkit_core.{module}"
    for module, names in {
        "run.build": "build_backbone call_with_accepted",
        "kit.weights": "load_weights read_state_dict pretrained_unavailable probe_url torch_hub_checkpoint",
        "training.checkpoint": "safe_load atomic_save atomic_link atomic_write_bytes write_json",
        "errors": "require",
        "kit.media": "new_figure save_png write_csv to_display prediction_grid log_figure never_fail",
    }.items()
    for name in names.split()
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'visionkit_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "HOOKSPEC_VERSION",
    "SPLITS",
    "AmbiguousNameError",
    "BadSample",
    "CheckpointError",
    "ConfigError",
    "ConflictError",
    "DataInfo",
    "DataSpec",
    "ExportSpec",
    "FeatureLevel",
    "MediaSample",
    "MissingDependencyError",
    "PluginLoadError",
    "Prediction",
    "Registrar",
    "Sample",
    "TaskSpec",
    "UnknownNameError",
    "UsageError",
    "VisionData",
    "VisionTask",
    "VisionkitError",
    "__version__",
    "atomic_link",
    "atomic_save",
    "atomic_write_bytes",
    "build_backbone",
    "call_with_accepted",
    "hookimpl",
    "load_weights",
    "log_figure",
    "never_fail",
    "new_figure",
    "prediction_grid",
    "pretrained_unavailable",
    "probe_url",
    "read_state_dict",
    "require",
    "safe_load",
    "save_png",
    "task_spec_of",
    "to_display",
    "torch_hub_checkpoint",
    "write_csv",
    "write_json",
]
