"""One trial: the sweep's base config with the trial's values, trained by ``visionkit train``'s code.

The trial's run directory is ``SWEEP_DIR/trials/<number>/`` with everything a ``train`` run
writes (config.yaml, checkpoints, summary.json), so ``predict``/``export``/``validate`` take
its checkpoints like any other. Runs in the sweep's process (``--backend local``) or in a Ray
worker (:func:`remote_trial`); either way the outcome is a plain dict the sweep records.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from visionkit_core.run.config import RunConfig, apply_mapping


@dataclass
class TrialSpec:
    """What a trial needs, in plain values (it travels to Ray workers)."""

    number: int
    trial_id: int
    params: dict[str, Any]
    base: dict[str, Any]
    run_dir: str
    monitor: str
    wandb_group: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def trial_config(base: RunConfig, params: dict[str, Any], run_dir: str, number: int) -> RunConfig:
    """The trial's config: ``base`` with each searched key set as ``--set`` sets it."""
    from visionkit_sweep.space import apply_params

    return replace(apply_params(base, params, f"trial {number}"), run_dir=run_dir, resume=None)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _one_line(err: BaseException) -> str:
    from visionkit_core.errors import VisionkitError

    text = " ".join(str(err).split())
    return text if isinstance(err, VisionkitError) else f"{type(err).__name__}: {text}"


def run_trial(spec: TrialSpec, trial: Any, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the trial; report to ``trial`` (an Optuna trial) each epoch; return its outcome.

    A failure (a non-finite loss, a value the run refuses, any error) is an outcome, never
    raised: the sweep records it and goes on.
    """
    from visionkit_core.run.assemble import run_train
    from visionkit_sweep.pruning import OptunaPruning

    started = time.perf_counter()
    outcome: dict[str, Any] = {"state": "fail", "value": None, "reason": None, "epochs": None}
    env = dict(spec.env)
    if spec.wandb_group:
        env["WANDB_RUN_GROUP"] = spec.wandb_group  # every trial's wandb run in the sweep's group
    try:
        base = apply_mapping(RunConfig(), spec.base, "sweep.yaml")
        config = trial_config(base, spec.params, spec.run_dir, spec.number)
        pruning = OptunaPruning(trial, spec.monitor)
        with _environment(env):
            result = run_train(config, echo=echo, callbacks=[pruning])
    except Exception as err:  # the trial failed; the sweep goes on
        outcome["reason"] = _one_line(err)
        outcome["wall_s"] = round(time.perf_counter() - started, 3)
        return outcome
    summary = result.summary
    outcome["wall_s"] = round(time.perf_counter() - started, 3)
    outcome["epochs"] = int(summary.get("epochs", 0))  # epochs trained (the Trainer's count after fit)
    best = (summary.get("monitor") or {}).get("best")
    final = (summary.get("metrics") or {}).get(spec.monitor)
    value = best if best is not None else final
    if summary.get("interrupted"):
        outcome.update(state="interrupted", reason="interrupted (Ctrl-C or a signal) before the last epoch")
    elif pruning.pruned_at is not None:
        outcome.update(state="pruned", value=value, reason=f"pruned after epoch {pruning.pruned_at + 1}")
    elif value is None or not math.isfinite(float(value)):
        outcome["reason"] = f"the run reported no finite {spec.monitor}"
    else:
        outcome.update(state="complete", value=float(value))
    return outcome


def remote_trial(spec: TrialSpec, storage: str, study_name: str, pruner: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: open the shared study, attach to the trial the sweep asked for, run it."""
    import optuna

    from visionkit_sweep.study import make_pruner, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=study_name, storage=open_storage(storage), pruner=make_pruner(**pruner)
    )
    outcome = run_trial(spec, optuna.trial.Trial(study, spec.trial_id))
    used = resource.getrusage(resource.RUSAGE_SELF)
    return {
        **outcome,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        # the worker process's CPU seconds so far (Ray reuses a worker for several trials)
        "worker_cpu_s": round(used.ru_utime + used.ru_stime, 2),
    }
