"""visionkit: a plugin-based framework for training computer-vision models on Lightning.

Importing this package is cheap: it never imports torch, lightning, timm or wandb.
"""

from __future__ import annotations

from visionkit_core.errors import (
    AmbiguousNameError,
    CheckpointError,
    ConfigError,
    ConflictError,
    PluginLoadError,
    UnknownNameError,
    UsageError,
    VisionkitError,
)
from visionkit_core.plugin.hookspecs import HOOKSPEC_VERSION, hookimpl
from visionkit_core.plugin.registry import Registrar

__version__ = "0.1.0"

__all__ = [
    "HOOKSPEC_VERSION",
    "AmbiguousNameError",
    "CheckpointError",
    "ConfigError",
    "ConflictError",
    "PluginLoadError",
    "Registrar",
    "UnknownNameError",
    "UsageError",
    "VisionkitError",
    "__version__",
    "hookimpl",
]
