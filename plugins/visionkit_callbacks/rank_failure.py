"""One rank fails, every rank ends: a failure marker in the run directory and a watchdog per rank.

Without this, a rank that stops (non-finite loss, disk full, a plugin's callback raising)
leaves the others waiting in their next collective: with gloo until the peer's socket
closes, with NCCL until the process-group timeout (30 minutes). Here the failing rank
writes ``<run>/.visionkit/failures/<launch>/rank-<N>.json`` with its message before it
exits; every other rank's watchdog thread sees it and ends its process after a short grace
period, and the command line prints the one message of the rank that failed: an exception a
rank meets only because another one failed is marked
(:func:`visionkit_core.errors.mark_failed_on_another_rank`), and that rank exits 1 quietly
instead of reporting the broken connection as an error of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from visionkit_core.errors import VisionkitError, mark_failed_on_another_rank

#: Seconds a healthy rank waits, once another rank has failed, before it ends itself.
GRACE_S = 10.0
POLL_S = 0.25


def launch_id() -> str:
    """What all ranks of one launch share (the rendezvous port), and no earlier launch did."""
    parts = [
        os.environ.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "MASTER_ADDR", "MASTER_PORT")
    ]
    return "-".join(p for p in parts if p).replace("/", "_").replace(":", "_") or "local"


class _State:
    folder: Path | None = None
    rank = 0
    failed_here = False


def failure_dir(run_dir: Path) -> Path:
    return Path(run_dir) / ".visionkit" / "failures"


def other_rank_failure() -> dict[str, Any] | None:
    """The failure another rank of this launch reported, if any."""
    folder = _State.folder
    if folder is None or not folder.is_dir():
        return None
    for marker in sorted(folder.glob("rank-*.json")):
        if marker.name != f"rank-{_State.rank}.json":
            try:
                return dict(json.loads(marker.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                return {"rank": marker.stem.split("-")[-1], "message": "(unreadable report)"}
    return None


def describe(exc: BaseException) -> str:
    """The one line the CLI prints for ``exc``."""
    if isinstance(exc, VisionkitError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class RankFailure(Callback):
    """Writes this rank's failure for the others, and ends this rank when another one failed."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if trainer.world_size <= 1 or self._thread is not None:
            return
        base = failure_dir(self.run_dir)
        _State.folder, _State.rank = base / launch_id(), int(trainer.global_rank)
        if trainer.is_global_zero and base.is_dir():  # reports of earlier launches are history
            for old in base.iterdir():
                if old.name != _State.folder.name:
                    shutil.rmtree(old, ignore_errors=True)
        self._thread = threading.Thread(target=self._watch, name="visionkit-rank-watchdog", daemon=True)
        self._thread.start()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if trainer.world_size <= 1 or _State.folder is None:
            return
        if other_rank_failure() is not None:  # this rank only fails because another one did
            mark_failed_on_another_rank(exception)
            return
        _State.failed_here = True
        _State.folder.mkdir(parents=True, exist_ok=True)
        report = {"rank": int(trainer.global_rank), "message": describe(exception)}
        tmp = _State.folder / f".rank-{_State.rank}.tmp"
        tmp.write_text(json.dumps(report), encoding="utf-8")
        os.replace(tmp, _State.folder / f"rank-{_State.rank}.json")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._stop.set()

    def _watch(self) -> None:
        seen_at: float | None = None
        while not self._stop.wait(POLL_S):
            if _State.failed_here:
                return
            if seen_at is None and other_rank_failure() is not None:
                seen_at = time.monotonic()
            if seen_at is not None and time.monotonic() - seen_at >= GRACE_S:
                sys.stderr.flush()
                os._exit(1)  # stuck in a collective with a rank that is gone: nothing left to save
