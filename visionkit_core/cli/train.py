"""``visionkit train``: assemble the chosen plugins into one Lightning run."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer

from visionkit_core.cli.options import config_and_resume, with_train_options


def hide_secrets_in_argv() -> None:
    """Redact secret ``--set`` values in ``sys.argv`` (loggers such as wandb record it).

    Lightning's launcher starts the other ranks from ``sys.argv``; they read the real command
    line from the environment instead (see :func:`visionkit_core.cli.main`).
    """
    from visionkit_core.run.argv import redacted_argv
    from visionkit_core.training.distributed import ARGV_ENV

    redacted = redacted_argv(sys.argv)
    if redacted != sys.argv:
        os.environ.setdefault(ARGV_ENV, json.dumps(sys.argv[1:]))
        sys.argv[:] = redacted


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""

    @app.command(
        "train",
        help="Train a model. With no options: the built-in resnet18 classifier on the embedded digits "
        "dataset; with --task and no --data: that task's demo. The data options mean the same for "
        "every task: --data is read by the dataset plugin that recognises its layout, --image-size and "
        "--epochs default to that dataset's own values.",
        no_args_is_help=False,
    )
    @with_train_options
    def train(**options: Any) -> None:
        config, resume = config_and_resume(options)
        hide_secrets_in_argv()

        from visionkit_core.run.assemble import run_train

        result = run_train(config, resume=resume)
        if not result.is_global_zero:
            return  # rank 0 reports for the whole run
        metrics = result.summary["metrics"]
        # per-class values (val/recall/<class>) stay in summary.json: one line must stay readable
        shown = {k: v for k, v in metrics.items() if k.startswith("val/") and k.count("/") == 1}
        typer.echo("")
        typer.echo("Final " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        if result.summary.get("skipped_images"):
            listed = result.summary.get("skipped_files") or []
            typer.echo(f"Skipped images:  {result.summary['skipped_images']} (listed in summary.json)")
            for path in listed[:20]:
                typer.echo(f"  {path}")
            if result.summary["skipped_images"] > 20:
                typer.echo(f"  ... and {result.summary['skipped_images'] - 20} more")
        typer.echo(f"Run directory:   {result.run_dir}")
        typer.echo(f"Best checkpoint: {result.summary['best_checkpoint']}")
        if result.summary.get("interrupted"):
            typer.echo("Training was interrupted; continue with --resume last", err=True)
            sys.exit(1)
