"""Errors visionkit raises on purpose: each carries one line a user can act on."""

from __future__ import annotations


class VisionkitError(Exception):
    """Base class. The CLI prints ``str(err)`` and exits with ``exit_code``."""

    exit_code = 1


class UsageError(VisionkitError):
    """Something the user asked for is wrong (bad flag, unknown name, missing folder)."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A backbone/task/dataset/callback/logger name that no plugin provides."""


class AmbiguousNameError(UsageError):
    """A bare name that several namespaces provide."""


class ConflictError(VisionkitError):
    """Two plugins claim the same namespace or the same name."""

    exit_code = 2


class ConfigError(UsageError):
    """The run configuration is invalid (bad YAML, unknown key, bad value)."""


class PluginLoadError(VisionkitError):
    """A plugin failed to import or register (fatal only in strict mode)."""

    exit_code = 3


class CheckpointError(UsageError):
    """A checkpoint is missing, unreadable, or unsafe."""


class Terminated(VisionkitError):
    """The run stopped because it received SIGTERM (128 + SIGTERM, what a shell reports)."""

    exit_code = 143


class MissingDependencyError(UsageError):
    """An optional package a command needs is not installed; the message names the pip command."""


def require(module: str, extra: str, what: str) -> None:
    """Raise :class:`MissingDependencyError` unless ``module`` can be imported: call it before any work, so
    nothing is half-written. ``extra``: the visionkit extra that installs it; ``what``: the feature."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependencyError(
            f"{what} needs the {module!r} package, which is not installed: pip install 'visionkit[{extra}]'"
        )


def mark_failed_on_another_rank(err: BaseException) -> None:
    """Mark ``err`` as a consequence of another rank's failure: that rank reports it, this one
    ends quietly (the broken connection is not an error of its own; see :func:`failed_on_another_rank`)."""
    err._visionkit_another_rank_failed = True  # type: ignore[attr-defined]


def failed_on_another_rank(err: BaseException) -> bool:
    return bool(getattr(err, "_visionkit_another_rank_failed", False))
