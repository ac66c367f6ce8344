"""The command line with secret ``--set`` values redacted (no heavy imports: runs before the run starts)."""

from __future__ import annotations

from collections.abc import Sequence

from visionkit_core.run.config import REDACTED, is_secret_key

_SET_FLAGS = ("--set", "-s")


def redacted_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of secret-looking ``--set KEY=VALUE`` options replaced.

    Loggers record the command line (wandb uploads it as the run's ``args``); a key given as
    ``--set logger.x.api_key=...`` must not travel with it.
    """
    out = list(argv)
    value_next = False
    for i, arg in enumerate(out):
        prefix = next((f"{flag}=" for flag in _SET_FLAGS if arg.startswith(f"{flag}=")), None)
        if not value_next and prefix is None:
            value_next = arg in _SET_FLAGS
            continue
        prefix = prefix or ""
        value_next = False
        key, sep, value = arg[len(prefix) :].partition("=")
        if sep and value and is_secret_key(key.rsplit(".", 1)[-1]):
            out[i] = f"{prefix}{key}={REDACTED}"
    return out
