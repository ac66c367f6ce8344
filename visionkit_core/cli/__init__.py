"""The ``visionkit`` command line: plugins are loaded first, then the Typer app is built.

Imports stay lazy: ``visionkit --help`` must never import torch, lightning, timm or wandb.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from visionkit_core.errors import VisionkitError, failed_on_another_rank


def _preparse(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Read the global plugin flags before Typer runs (plugins may add commands)."""
    blocked: list[str] = []
    strict = False
    it = iter(argv)
    for arg in it:
        if arg == "--no-plugin":
            blocked.append(next(it, ""))
        elif arg.startswith("--no-plugin="):
            blocked.append(arg.split("=", 1)[1])
        elif arg == "--strict-plugins":
            strict = True
        elif arg == "--":
            break
    return [b for b in blocked if b], strict


def _launched_rank_args(args: list[str]) -> list[str]:
    """A rank started by Lightning's launcher gets rank 0's redacted argv; use the real one."""
    import json

    from visionkit_core.training.distributed import ARGV_ENV, launch_rank

    saved = os.environ.get(ARGV_ENV)
    if saved and launch_rank() > 0:
        return list(json.loads(saved))
    return args


def _debug() -> bool:
    return os.environ.get("VISIONKIT_DEBUG", "").strip() not in ("", "0", "false")


def _is_sigterm(exc: SystemExit) -> bool:
    """Whether ``exc`` is Lightning's ``SIGTERMException`` (checked without importing Lightning)."""
    module = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return module is not None and isinstance(exc, module.SIGTERMException)


def _plugin_in_traceback(err: BaseException) -> str | None:
    """The third-party plugin whose code raised ``err`` (the innermost plugin frame), described."""
    from visionkit_core.plugin.manager import current_plugins

    plugins = current_plugins()
    if plugins is None:
        return None
    packages = {
        info.module.split(".")[0].split(":")[0]: info for info in plugins.infos.values() if not info.builtin
    }
    found = None
    tb = err.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        found = packages.get(module.split(".")[0], found)
        tb = tb.tb_next
    if found is None:
        return None
    return f"plugin {found.name!r} ({found.distribution} {found.version})"


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    # OpenMP threads spin for a short while only before they sleep (libgomp spins ~300,000
    # rounds by default): set before torch loads; a user's own setting wins. See
    # the callbacks plugin's ThreadPolicy and docs/performance.md.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    if argv is None:
        args = _launched_rank_args(args)
    try:
        from visionkit_core.cli.app import build_app
        from visionkit_core.plugin.manager import get_plugins, set_plugins

        blocked, strict = _preparse(args)
        set_plugins(None)
        plugins = get_plugins(blocked=blocked, strict=True if strict else None)
        plugins.registry  # noqa: B018 - registration hooks run now, so failures are reported once, up front
        plugins.report_errors()
        app = build_app(plugins)
        app(args=args, prog_name="visionkit")
    except BaseException as err:
        if failed_on_another_rank(err) and not _debug():
            sys.exit(1)  # the rank that failed printed the one message that matters
        _report(err)


def _report(err: BaseException) -> None:
    """Print ``err`` as the CLI does and exit with its code (re-raise what is not ours to handle)."""
    try:
        raise err
    except VisionkitError as err:
        if _debug():
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    except SystemExit as exc:
        if _is_sigterm(exc):  # Lightning ends a run on SIGTERM with exit code 0; a stop is not a success
            print("Error: stopped by SIGTERM before finishing", file=sys.stderr)
            sys.exit(143)
        raise
    except Exception as err:
        if _debug():
            raise
        culprit = _plugin_in_traceback(err)
        if culprit is not None:
            print(
                f"Error: {culprit} raised {type(err).__name__}: {err}\n"
                "Set VISIONKIT_DEBUG=1 to see the traceback, and report it to that plugin's authors.",
                file=sys.stderr,
            )
            sys.exit(1)
        print(
            f"Error: unexpected {type(err).__name__}: {err}\n"
            "Set VISIONKIT_DEBUG=1 to see the traceback, and please report it if it is a bug.",
            file=sys.stderr,
        )
        sys.exit(1)
