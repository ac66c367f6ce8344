"""``visionkit tune lr|batch-size [train options]``: Lightning's Tuner on the run ``train`` would build.

The datamodule and task come from the same assembly as ``train``
(:func:`visionkit_core.run.assemble.build_fit_parts`) and the recipe callbacks from the same
``visionkit_configure_trainer`` hook, so the suggestion is for exactly the run the same options
would train. Results go to the run directory (``--run-dir``, default
``runs/<timestamp>-tune-<backbone>``): ``tune_lr.json`` and ``plots/lr_find.png``, or
``tune_batch_size.json``. Nothing else is written there (no checkpoints, no config.yaml).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from visionkit_core.cli.options import config_from_options, with_train_options

app = typer.Typer(
    help="Find a learning rate or the largest batch size with Lightning's Tuner.", no_args_is_help=True
)


def _with_extra(func: Callable[..., Any], **extra: Any) -> Callable[..., Any]:
    """Add ``extra`` (name -> ``(annotation, default)``) after the train options of ``func``."""
    sig = func.__signature__  # type: ignore[attr-defined]
    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in extra.items()
    ]
    func.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *params])  # type: ignore[attr-defined]
    return func


def _split(options: dict[str, Any], names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    extra = {n: options.pop(n) for n in names}
    return options, extra


def _lr(**options: Any) -> None:
    """Run Lightning's learning-rate finder; print the suggestion and write the plot."""
    train, extra = _split(options, ("min_lr", "max_lr", "steps"))
    config = config_from_options(train)
    result = run_tune("lr", config, **extra)
    _report(result)


def _batch_size(**options: Any) -> None:
    """Find the largest batch size that fits (Lightning's ``scale_batch_size``)."""
    train, extra = _split(options, ("mode", "max_trials", "steps_per_trial"))
    config = config_from_options(train)
    _report(run_tune("batch-size", config, **extra))


app.command(
    "lr",
    help="Sweep the learning rate over a short run (Lightning's lr_find); print the suggested --lr and "
    "write the loss-vs-LR plot into the run directory.",
)(
    _with_extra(
        with_train_options(_lr),
        min_lr=(Annotated[float, typer.Option("--min-lr", help="Smallest learning rate tried.")], 1e-6),
        max_lr=(Annotated[float, typer.Option("--max-lr", help="Largest learning rate tried.")], 1.0),
        steps=(Annotated[int, typer.Option("--steps", min=10, help="Training steps of the sweep.")], 100),
    )
)
app.command(
    "batch-size",
    help="Grow the batch size until it no longer fits (or reaches the data's size); print the largest.",
)(
    _with_extra(
        with_train_options(_batch_size),
        mode=(
            Annotated[str, typer.Option("--mode", help="power (double) | binsearch (then refine).")],
            "power",
        ),
        max_trials=(
            Annotated[int, typer.Option("--max-trials", min=1, help="Most batch sizes tried.")],
            6,
        ),
        steps_per_trial=(
            Annotated[int, typer.Option("--steps-per-trial", min=1, help="Training steps per size.")],
            3,
        ),
    )
)


def _report(result: dict[str, Any]) -> None:
    for line in result["lines"]:
        typer.echo(line)


def run_tune(kind: str, config: Any, **options: Any) -> dict[str, Any]:
    """Build the run ``config`` describes, tune it, and write the results into its run directory."""
    from visionkit_core.errors import UsageError
    from visionkit_core.plugin.manager import get_plugins, use_plugins

    if kind == "batch-size" and options.get("mode") not in ("power", "binsearch"):
        raise UsageError(f"--mode {options.get('mode')!r} is not one of: power, binsearch")
    if kind == "lr" and not 0 < options["min_lr"] < options["max_lr"]:
        raise UsageError(
            f"--min-lr must be positive and below --max-lr, got {options['min_lr']}, {options['max_lr']}"
        )
    plugins = get_plugins()
    with use_plugins(plugins):
        return _tune(kind, config, plugins, options)


def _tune(kind: str, config: Any, plugins: Any, options: dict[str, Any]) -> dict[str, Any]:
    from lightning.pytorch.tuner.tuning import Tuner

    from visionkit_core.run import assemble
    from visionkit_core.run.resolve import validate_components
    from visionkit_core.training.checkpoint import write_json

    resolved = validate_components(config, plugins)
    config = resolved.config
    assemble.check_preconditions(config)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.run_dir) if config.run_dir else Path("runs") / f"{stamp}-tune-{kind}"
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = assemble.build_fit_parts(resolved)
    resolved, config = parts.resolved, parts.resolved.config  # the batch size, lr and epochs chosen
    kwargs = {
        **assemble.trainer_kwargs(resolved, run_dir),
        "enable_checkpointing": False,
        # both tuners judge training steps only: validating in between would only cost time
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    callbacks = assemble.trainer_callbacks(plugins, "tune", run_dir, resolved.task_spec)
    # the averaged weights play no part in a sweep (a frozen backbone does): plugins see no --ema
    no_ema = dataclasses.replace(config, ema=False, ema_decay=None)
    trainer = assemble.build_trainer(plugins, no_ema, kwargs, callbacks, loggers=[])
    tuner = Tuner(trainer)
    if kind == "lr":
        return _lr_result(tuner, parts, run_dir, options, write_json, train_command(sys.argv))
    return _batch_result(tuner, parts, run_dir, options, write_json, config.batch_size)


#: ``tune lr`` options that are not train options (dropped from the suggested train command), with their
#: value; ``--lr`` is dropped too, since the suggestion replaces it.
_TUNE_ONLY = ("--min-lr", "--max-lr", "--steps", "--lr", "--run-dir")


def train_command(argv: list[str]) -> str:
    """``visionkit train ...`` with the options of ``visionkit tune lr ...`` minus the tune-only ones."""
    args = list(argv[1:])
    if "tune" in args:
        args = args[args.index("tune") + 2 :]
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.partition("=")[0]
        if name in _TUNE_ONLY:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return " ".join(["visionkit train", *kept])


def _lr_result(
    tuner: Any, parts: Any, run_dir: Path, options: dict[str, Any], write_json: Any, command: str
) -> dict[str, Any]:
    finder = tuner.lr_find(
        parts.model,
        datamodule=parts.datamodule,
        min_lr=options["min_lr"],
        max_lr=options["max_lr"],
        num_training=options["steps"],
        update_attr=False,
    )
    suggestion = finder.suggestion() if finder is not None else None
    plot = run_dir / "plots" / "lr_find.png"
    if finder is not None:
        from visionkit_core.kit.media import save_png

        fig = finder.plot(suggest=suggestion is not None, show=False)
        plot.parent.mkdir(parents=True, exist_ok=True)
        save_png(fig, plot)
        import matplotlib.pyplot as plt

        plt.close(fig)
    results = finder.results if finder is not None else {"lr": [], "loss": []}
    write_json(
        run_dir / "tune_lr.json",
        {
            "suggestion": suggestion,
            "min_lr": options["min_lr"],
            "max_lr": options["max_lr"],
            "steps": options["steps"],
            "lr": [float(v) for v in results["lr"]],
            "loss": [float(v) for v in results["loss"]],
        },
    )
    if suggestion is None:
        lines = ["No learning rate suggested: the loss curve is too short or too flat (try more --steps)"]
    else:
        lines = [
            f"Suggested learning rate: {suggestion:.3g}",
            f"Use it with: {command} --lr {suggestion:.3g}",
        ]
    return {"suggestion": suggestion, "plot": plot, "run_dir": run_dir, "lines": [*lines, f"Plot: {plot}"]}


def _batch_result(
    tuner: Any, parts: Any, run_dir: Path, options: dict[str, Any], write_json: Any, start: int
) -> dict[str, Any]:
    found = tuner.scale_batch_size(
        parts.model,
        datamodule=parts.datamodule,
        mode=options["mode"],
        steps_per_trial=options["steps_per_trial"],
        init_val=start,
        max_trials=options["max_trials"],
        batch_arg_name="batch_size",
    )
    write_json(run_dir / "tune_batch_size.json", {"batch_size": found, "start": start, **options})
    lines = [
        f"Largest batch size tried that fits: {found} (started at {start})",
        f"Use it with: visionkit train ... --batch-size {found} (scale --lr with it, e.g. linearly)",
        f"Results: {run_dir / 'tune_batch_size.json'}",
    ]
    return {"batch_size": found, "run_dir": run_dir, "lines": lines}


def suggestion_of(run_dir: str | Path) -> float | None:
    """The learning rate ``tune lr`` suggested into ``run_dir`` (tests, scripts)."""
    return json.loads((Path(run_dir) / "tune_lr.json").read_text())["suggestion"]  # type: ignore[no-any-return]
