"""``visionkit sweep``: the command-line surface (Typer); the work is in :mod:`visionkit_sweep.driver`.

The command takes every ``train`` option except three that mean something else here:
``--sampler`` picks the Optuna sampler (the data sampler is ``--set sampler=balanced`` or a
``--config`` key), ``--resume`` continues a sweep directory, and ``--run-dir`` is replaced by
``--sweep-dir`` (each trial's run directory is ``SWEEP_DIR/trials/<number>``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from visionkit_core.cli.options import config_from_options, with_train_options

#: train options the sweep does not take (each has a sweep meaning or is set per trial)
_NOT_TRAIN = ("resume", "sampler", "run_dir")
_PANEL = "Sweep"


def _opt(*decls: str, help: str, **kw: Any) -> Any:
    return typer.Option(*decls, help=help, rich_help_panel=_PANEL, **kw)


#: name -> (annotation, default) of the sweep's own options
SWEEP_OPTIONS: dict[str, tuple[Any, Any]] = {
    "space": (
        Annotated[
            Path | None,
            _opt("--space", help="SPACE.yaml: config keys (as --set takes them) with their ranges."),
        ],
        None,
    ),
    "trials": (
        Annotated[
            int | None,
            _opt("--trials", "-n", min=0, help="Trials in the study in all (with --resume: the new total)."),
        ],
        None,
    ),
    "sweep_dir": (
        Annotated[
            Path | None,
            _opt(
                "--sweep-dir", help="Where the study, the trials and the summary go (default sweeps/<time>)."
            ),
        ],
        None,
    ),
    "search_sampler": (
        Annotated[str | None, _opt("--sampler", help="Optuna sampler: tpe (default) | random | grid.")],
        None,
    ),
    "pruner": (
        Annotated[
            str | None, _opt("--pruner", help="Stop poor trials early: median (default) | hyperband | none.")
        ],
        None,
    ),
    "pruner_startup_trials": (
        Annotated[
            int,
            _opt("--pruner-startup-trials", min=0, help="Median pruner: finished trials before it prunes."),
        ],
        5,
    ),
    "storage": (
        Annotated[
            str | None,
            _opt("--storage", help="Optuna storage URL (default: sqlite:///SWEEP_DIR/study.db)."),
        ],
        None,
    ),
    "study_name": (
        Annotated[
            str | None, _opt("--study-name", help="Study name in the storage (default: SWEEP_DIR's name).")
        ],
        None,
    ),
    "enqueue": (
        Annotated[
            list[str] | None,
            _opt(
                "--enqueue", help="A point to try first, as YAML: '{lr: 0.01, augment: none}' (repeatable)."
            ),
        ],
        None,
    ),
    "resume": (
        Annotated[
            Path | None,
            _opt("--resume", help="Continue the sweep in SWEEP_DIR; finished trials are not run again."),
        ],
        None,
    ),
    "backend": (
        Annotated[
            str | None,
            _opt("--backend", help="local (default: one trial after another here) | ray (Ray tasks)."),
        ],
        None,
    ),
    "address": (
        Annotated[
            str | None,
            _opt("--address", help="With --backend ray: the cluster (host:port); default: a local Ray."),
        ],
        None,
    ),
    "trial_cpus": (
        Annotated[float | None, _opt("--trial-cpus", help="With --backend ray: CPUs per trial (default 1).")],
        None,
    ),
    "trial_gpus": (
        Annotated[float | None, _opt("--trial-gpus", help="With --backend ray: GPUs per trial (default 0).")],
        None,
    ),
}


def _sweep(**options: Any) -> None:
    """Run (or continue) a hyperparameter sweep over ``train`` runs; print the summary table."""
    from visionkit_sweep.driver import SweepRequest, run_sweep

    sweep = {name: options.pop(name) for name in SWEEP_OPTIONS}
    given = sorted(k for k, v in options.items() if v not in (None, []))
    base = None if sweep["resume"] is not None else config_from_options(options)
    result = run_sweep(SweepRequest(base=base, train_flags_given=given, **sweep), echo=typer.echo)
    for line in result.lines:
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to ``app``."""
    func = with_train_options(_sweep)
    train = [p for n, p in func.__signature__.parameters.items() if n not in _NOT_TRAIN]  # type: ignore[attr-defined]
    own = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in SWEEP_OPTIONS.items()
    ]
    func.__signature__ = inspect.Signature([*own, *train])  # type: ignore[attr-defined]
    app.command(
        "sweep",
        help="Search hyperparameters with Optuna: each trial is a `train` run in SWEEP_DIR/trials/<n>; "
        "ends with summary.csv/.md, best.yaml (for train --config) and plots/. "
        "--resume SWEEP_DIR continues a stopped sweep.",
    )(func)
