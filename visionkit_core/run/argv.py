"""The command line with secret ``--set`` values redacted (no heavy imports: runs before the run starts)."""

from __future__ import annotations

from collections.abc import Sequence

from visionkit_core.run.config import REDACTED, is_secret_key


def redacted_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of secret-looking ``--set KEY=VALUE`` options replaced: loggers record
    the command line (wandb uploads it), and ``--set logger.x.api_key=...`` must not travel with it."""
    out, value_next = list(argv), False
    for i, arg in enumerate(out):
        flag = next((f"{f}=" for f in ("--set", "-s") if arg.startswith(f"{f}=")), "")
        if not value_next and not flag:
            value_next = arg in ("--set", "-s")
            continue
        value_next = False
        key, sep, value = arg[len(flag) :].partition("=")
        if sep and value and is_secret_key(key.rsplit(".", 1)[-1]):
            out[i] = f"{flag}{key}={REDACTED}"
    return out
