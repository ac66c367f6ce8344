"""The ask-and-tell loop shared by both backends: ask the sampler, hand the trial out, record it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from visionkit_core.run.config import RunConfig
from visionkit_sweep import report
from visionkit_sweep.space import Param
from visionkit_sweep.study import (
    DRIVER_ATTR,
    RETRY_ATTR,
    driver_id,
    finished_count,
    make_pruner,
    make_sampler,
    open_storage,
    recover_interrupted,
    running_elsewhere,
)
from visionkit_sweep.trial import TrialSpec, run_trial

#: environment a trial passes on to Ray workers (never credentials: WANDB_API_KEY stays here; nor
#: WANDB_SERVICE, which points at this process's own wandb service once a trial ran here)
_FORWARDED = ("VISIONKIT_", "WANDB_", "HF_HUB_OFFLINE")
_SECRET_ENV = ("WANDB_API_KEY", "WANDB_SERVICE")


@dataclass
class Sweep:
    sweep_dir: Path
    state: dict[str, Any]
    storage_url: str
    space: list[Param]
    base: RunConfig
    monitor: str
    mode: str
    grid: dict[str, list[Any]] | None
    echo: Callable[[str], None]
    study: Any = None
    best_number: int | None = None
    ran: list[int] = field(default_factory=list)

    # -- the study ----------------------------------------------------------------------
    def open(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            storage=open_storage(self.storage_url),
            study_name=self.state["study_name"],
            direction="maximize" if self.mode == "max" else "minimize",
            pruner=self.pruner(),
            load_if_exists=True,
        )
        # a fresh seed for each start, so a resumed sweep does not draw the first values again
        seed = int(self.base.seed) + len(self.study.get_trials(deepcopy=False))
        self.study.sampler = make_sampler(self.state["sampler"], seed, self.grid)
        recover_interrupted(self.study, self.echo)

    def pruner(self) -> Any:
        return make_pruner(**self.pruner_spec())

    def pruner_spec(self) -> dict[str, Any]:
        return {
            "name": self.state["pruner"],
            "startup": int(self.state.get("pruner_startup_trials", 5)),
            "epochs": int(self.base.epochs or 1),
        }

    def target(self) -> int:
        """``--trials``; with ``--sampler grid`` at most the grid's size."""
        target = int(self.state["trials"])
        if self.grid is not None:
            size = 1
            for values in self.grid.values():
                size *= len(values)
            target = min(target, size)
        return target

    def remaining(self, in_flight: int = 0) -> int:
        done = finished_count(self.study) + running_elsewhere(self.study) + in_flight
        return max(self.target() - done, 0)

    # -- one trial ----------------------------------------------------------------------
    def ask(self) -> tuple[Any, TrialSpec]:
        trial = self.study.ask()
        params = {p.key: p.suggest(trial) for p in self.space}
        run_dir = self.sweep_dir / "trials" / str(trial.number)
        trial.set_user_attr(DRIVER_ATTR, driver_id())
        trial.set_user_attr("run_dir", str(Path("trials") / str(trial.number)))
        env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED) and k not in _SECRET_ENV}
        spec = TrialSpec(
            number=trial.number,
            trial_id=trial._trial_id,  # Optuna's own id: a Ray worker attaches to this trial
            params=params,
            base=self.base.to_dict(redact=False),
            run_dir=str(run_dir.resolve()),
            monitor=self.monitor,
            wandb_group=self.state["study_name"] if "wandb" in " ".join(self.base.loggers) else None,
            env=env,
        )
        shown = ", ".join(f"{k}={report._fmt(v)}" for k, v in params.items())
        self.echo(f"trial {trial.number}: {shown}")
        return trial, spec

    def record(self, trial: Any, outcome: dict[str, Any]) -> bool:
        """Tell the study how the trial ended; False when the sweep must stop (interrupted)."""
        for key in ("wall_s", "epochs", "worker", "worker_cpu_s"):
            if outcome.get(key) is not None:
                trial.set_user_attr(key, outcome[key])
        if outcome.get("reason"):
            trial.set_user_attr("reason", outcome["reason"])
        state = outcome["state"]
        self.ran.append(trial.number)
        if state == "complete":
            self.study.tell(trial, float(outcome["value"]))
        elif state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        if state == "interrupted":
            self.study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})
        value = outcome.get("value")
        metric = f" {self.monitor} {value:.4f}" if isinstance(value, float) else ""
        reason = f": {outcome['reason']}" if outcome.get("reason") else ""
        wall = outcome.get("wall_s") or 0.0
        said = {"fail": "failed"}.get(state, state)
        self.echo(f"trial {trial.number} {said}{metric} ({wall:.1f} s){reason}")
        return state != "interrupted"

    def run_local(self) -> None:
        """Trials one after another in this process."""
        while self.remaining() > 0:
            trial, spec = self.ask()
            try:
                outcome = run_trial(spec, trial, echo=self.echo)
            except BaseException:  # Ctrl-C (Lightning exits with 1 on it): queue the trial again
                # a storage write cut by the signal may fail here; --resume then finds the trial orphaned
                with contextlib.suppress(Exception):
                    self.record(trial, {"state": "interrupted", "reason": "interrupted"})
                raise
            if not self.record(trial, outcome):
                raise KeyboardInterrupt

    # -- the end --------------------------------------------------------------------------
    def report(self, wall: float) -> list[str]:
        trials = self.study.get_trials(deepcopy=False)
        keys = [p.key for p in self.space]
        table = report.rows(trials, keys)
        md = report.write_tables(self.sweep_dir, table, keys, self.monitor)
        lines = ["", *md, ""]
        best = report.best_trial(self.study)
        if best is not None:
            self.best_number = best.number
            path = report.write_best(self.sweep_dir, best, self.base, self.monitor)
            lines.append(
                f"Best trial:  {best.number}  {self.monitor} {best.value:.4f}  "
                f"({self.sweep_dir / 'trials' / str(best.number)})"
            )
            lines.append(f"Best config: {path}  (visionkit train --config {path})")
        else:
            lines.append("No trial completed: no best.yaml")
        plots, skipped = report.write_plots(self.study, self.sweep_dir)
        if plots:
            lines.append(f"Plots:       {self.sweep_dir / 'plots'} ({', '.join(p.name for p in plots)})")
        lines += [f"Plot skipped: {s}" for s in skipped]
        lines.append(f"Summary:     {self.sweep_dir / 'summary.md'}, {self.sweep_dir / 'summary.csv'}")
        lines.append(
            f"This run:    {len(self.ran)} trial(s) in {wall:.1f} s (study {self.state['study_name']!r})"
        )
        return lines
