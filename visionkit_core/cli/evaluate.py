"""``visionkit validate`` / ``visionkit test``: metrics of a checkpoint on a split."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from visionkit_core.cli.common import AcceleratorOption, BatchOption, CkptOption, DataOption, WorkersOption


def _evaluate(
    stage: str,
    ckpt: Path,
    data: str | None,
    batch_size: int | None,
    num_workers: int | None,
    output: Path | None,
    accelerator: str,
) -> None:
    from visionkit_core.workflows.evaluate import evaluate

    doc = evaluate(stage, ckpt, data, batch_size, num_workers, output, accelerator)
    typer.echo(json.dumps(doc["metrics"], indent=2))
    if doc["skipped_images"]:
        shown = ", ".join(doc["skipped_files"][:10])
        typer.echo(f"Skipped {doc['skipped_images']} unreadable samples: {shown}", err=True)
    typer.echo(f"Written: {doc['output']}")


OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="JSON file for the metrics (default: <run>/<command>.json)."),
]


_HELP = {
    "validate": "Metrics of a checkpoint on the validation split (printed and written as JSON).",
    "test": "Metrics of a checkpoint on the test split (DATA/test/), printed and written as JSON.",
}


def _command(stage: str) -> Callable[..., None]:
    def command(
        ckpt: CkptOption,
        data: DataOption = None,
        batch_size: BatchOption = None,
        num_workers: WorkersOption = None,
        output: OutputOption = None,
        accelerator: AcceleratorOption = "auto",
    ) -> None:
        _evaluate(stage, ckpt, data, batch_size, num_workers, output, accelerator)

    command.__doc__ = _HELP[stage]
    return command


def register(app: typer.Typer) -> None:
    """Add ``validate`` and ``test`` to ``app``."""
    for stage in ("validate", "test"):
        app.command(stage)(_command(stage))
