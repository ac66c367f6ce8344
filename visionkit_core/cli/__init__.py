"""The ``visionkit`` command line: plugins load first, then the Typer app is built (``--help`` imports
no torch, lightning, timm or wandb)."""

from __future__ import annotations

import json
import os
import sys
import traceback
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


def _debug() -> bool:
    return os.environ.get("VISIONKIT_DEBUG", "").strip() not in ("", "0", "false")


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
    for frame, _ in traceback.walk_tb(err.__traceback__):
        found = packages.get(str(frame.f_globals.get("__name__", "")).split(".")[0], found)
    return f"plugin {found.name!r} ({found.distribution} {found.version})" if found is not None else None


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    # OpenMP threads spin briefly before they sleep (libgomp: ~300,000 rounds by default): set before
    # torch loads; a user's own setting wins (the callbacks plugin's ThreadPolicy, docs/performance.md)
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    if argv is None:  # a rank started by Lightning's launcher gets rank 0's redacted argv: use the real one
        from visionkit_core.training.distributed import ARGV_ENV, launch_rank

        if os.environ.get(ARGV_ENV) and launch_rank() > 0:
            args = list(json.loads(os.environ[ARGV_ENV]))
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
        # Lightning ends a run on SIGTERM with exit code 0 (SIGTERMException); a stop is not a success
        lightning = sys.modules.get("lightning.pytorch.utilities.exceptions")
        if lightning is not None and isinstance(exc, lightning.SIGTERMException):
            print("Error: stopped by SIGTERM before finishing", file=sys.stderr)
            sys.exit(143)
        raise
    except Exception as err:
        if _debug():
            raise
        culprit = _plugin_in_traceback(err)
        what = f"{culprit} raised" if culprit else "unexpected"
        advice = "report it to that plugin's authors" if culprit else "please report it if it is a bug"
        print(f"Error: {what} {type(err).__name__}: {err}", file=sys.stderr)
        print(f"Set VISIONKIT_DEBUG=1 to see the traceback, and {advice}.", file=sys.stderr)
        sys.exit(1)
