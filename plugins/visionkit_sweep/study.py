"""The Optuna side of a sweep: storage, sampler, pruner, and trials left running by a killed sweep.

Imported only when ``sweep`` runs (it imports optuna).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from visionkit_core.errors import UsageError

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
#: the user attribute naming the sweep process that asked for a trial (host:pid)
DRIVER_ATTR = "driver"
#: the user attribute of a trial that re-runs an interrupted one (its number)
RETRY_ATTR = "retry_of"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's database storage for ``url``; a bad URL or missing driver is a usage error."""
    # SQLite: wait for the lock rather than fail while another process (a Ray worker) writes
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except ImportError as err:
        raise UsageError(
            f"--storage {safe_url(url)}: the database driver is not installed ({err}); install it with pip"
        ) from None
    except Exception as err:  # sqlalchemy's ArgumentError, OperationalError, ...
        raise UsageError(
            f"--storage {safe_url(url)}: cannot open it: {' '.join(str(err).split())[:300]}"
        ) from None


def safe_url(url: str) -> str:
    """``url`` with its password masked (for messages and sweep.yaml)."""
    try:
        from sqlalchemy.engine import make_url

        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:
        return "URL"


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler for an ask/tell loop: the sweep stops at the grid's size itself
    (``GridSampler`` calls ``study.stop()``, which only works inside ``study.optimize``)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def make_sampler(name: str, seed: int, grid: Mapping[str, Sequence[Any]] | None = None) -> Any:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return _Grid(dict(grid or {}), seed=seed)


def make_pruner(name: str, startup: int = 5, epochs: int = 1) -> Any:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(int(epochs), 1))
    return optuna.pruners.NopPruner()


def driver_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a killed process its parent has not reaped yet is a zombie: dead
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def orphaned(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial belongs to a sweep process on this host that no longer runs."""
    host, _, pid = str(trial.user_attrs.get(DRIVER_ATTR, "")).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def recover_interrupted(study: optuna.Study, echo: Callable[[str], None]) -> list[int]:
    """Mark trials whose sweep process died as failed and queue their values again; their numbers."""
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not orphaned(trial):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})
        recovered.append(trial.number)
        echo(f"visionkit: trial {trial.number} was running when its sweep stopped; it runs again")
    return recovered


def retried(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Interrupted trial number -> the trial that re-ran its values."""
    return {int(t.user_attrs[RETRY_ATTR]): t.number for t in trials if RETRY_ATTR in t.user_attrs}


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward ``--trials``: complete, pruned, or failed (not interrupted)."""
    trials = study.get_trials(deepcopy=False)
    interrupted = set(retried(trials))
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in trials if t.state in done and t.number not in interrupted)


def running_elsewhere(study: optuna.Study) -> int:
    """Trials another live sweep process is running now (they count toward ``--trials`` too)."""
    me = driver_id()
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get(DRIVER_ATTR) != me and not orphaned(t)
    )
