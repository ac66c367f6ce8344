"""The wandb logger: online when W&B credentials exist, otherwise offline with a note on syncing.

visionkit never reads, passes or stores the API key. It only checks whether wandb *would*
find credentials (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, or a ``.netrc`` entry for
the W&B host) to choose the mode, and leaves authentication to wandb itself.
"""

from __future__ import annotations

import netrc
import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from lightning.pytorch.loggers import WandbLogger

DEFAULT_BASE_URL = "https://api.wandb.ai"
_OFFLINE_MODES = {"offline", "dryrun"}
_ONLINE_MODES = {"online", "run"}


def _netrc_path(env: Mapping[str, str]) -> Path:
    """The .netrc file wandb reads: ``$NETRC``, else ``~/.netrc``, else ``~/_netrc`` (as wandb does)."""
    if env.get("NETRC"):
        return Path(env["NETRC"]).expanduser()
    unix = Path("~/.netrc").expanduser()
    windows = Path("~/_netrc").expanduser()
    return windows if not unix.exists() and windows.exists() else unix


def has_credentials(environ: Mapping[str, str] | None = None) -> bool:
    """Whether wandb would find credentials for its host (the key itself is never returned)."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY", "").strip() or env.get("WANDB_IDENTITY_TOKEN_FILE", "").strip():
        return True
    host = urlsplit(env.get("WANDB_BASE_URL", "").strip() or DEFAULT_BASE_URL).netloc
    if not host:
        return False
    try:
        entry = netrc.netrc(str(_netrc_path(env))).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_mode(offline: bool | None = None, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Return ``(mode, reason)``: the wandb mode to use and, for offline, why.

    An explicit ``offline`` option wins; then ``WANDB_MODE``; then whether credentials exist.
    """
    env = os.environ if environ is None else environ
    if offline is not None:
        return ("offline", "offline=true was set") if offline else ("online", "")
    env_mode = env.get("WANDB_MODE", "").strip().lower()
    if env_mode == "disabled":
        return "disabled", ""
    if env_mode in _OFFLINE_MODES:
        return "offline", f"WANDB_MODE={env_mode}"
    if env_mode in _ONLINE_MODES or has_credentials(env):
        return "online", ""
    return "offline", "no W&B API key found"


def offline_message(run_dir: Path, reason: str) -> str:
    """The one line printed when a run logs offline: why, where, and how to upload it."""
    wandb_dir = Path(run_dir).resolve() / "wandb"
    return (
        f"visionkit: wandb logs offline ({reason}); the run is saved under {wandb_dir}. "
        f"Upload it later with: wandb sync {shlex.quote(str(wandb_dir))}/offline-run-*"
    )


def _tags(tags: list[str] | str | None) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str):  # --set logger.wandb.tags=a,b arrives as one string
        return [t.strip() for t in tags.split(",") if t.strip()]
    return [str(t) for t in tags]


def wandb_logger(
    run_dir: Path,
    run_name: str,
    project: str = "visionkit",
    entity: str | None = None,
    tags: list[str] | None = None,
    offline: bool | None = None,
) -> WandbLogger:
    """A ``WandbLogger`` whose files live in ``<run_dir>/wandb``.

    ``offline=None`` (default) logs online when wandb has credentials and ``WANDB_MODE`` does
    not say otherwise, and offline (printing how to sync) when it has none. Checkpoints are
    never uploaded (``log_model=False``). Call :func:`finish_loggers` after the last Trainer
    call so the run's files are complete.
    """
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mode, reason = resolve_mode(offline)
    if mode == "offline" and getattr(rank_zero_only, "rank", 0) == 0:
        print(offline_message(run_dir, reason), file=sys.stderr, flush=True)

    # mode= goes to wandb.init; WandbLogger(offline=True) would instead set WANDB_MODE in
    # os.environ for the rest of the process.
    class FinishingWandbLogger(WandbLogger):  # type: ignore[misc]
        """Ends its wandb run when visionkit's run ends (``visionkit_finish``), so every file is written."""

        def visionkit_finish(self, failed: bool = False) -> None:
            finish_loggers([self], failed=failed)

    logger = FinishingWandbLogger(
        name=run_name,
        save_dir=str(run_dir),
        project=project,
        entity=entity,
        tags=_tags(tags),
        log_model=False,
        mode=mode,
    )
    # WandbLogger always passes anonymous=None to wandb.init, and wandb >= 0.19 warns about
    # any value of that deprecated setting on every run.
    init_kwargs = getattr(logger, "_wandb_init", None)
    if isinstance(init_kwargs, dict) and init_kwargs.get("anonymous") is None:
        init_kwargs.pop("anonymous", None)
    return logger


def finish_loggers(loggers: Iterable[Any], *, failed: bool = False) -> None:
    """Finish the wandb runs of ``loggers`` so every file is written; other loggers are left alone.

    Lightning's ``WandbLogger.finalize`` does not end the run (wandb otherwise does it at
    process exit, and a later ``WandbLogger`` in the same process would reuse the open run).
    Call this once after the last ``trainer.fit/validate/test`` that uses the loggers;
    ``failed=True`` marks the run as failed.
    """
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        run = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
        if run is not None and callable(getattr(run, "finish", None)):
            run.finish(exit_code=1 if failed else 0)
