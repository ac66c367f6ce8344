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
    from visionkit_core.cli.common import eval_trainer
    from visionkit_core.workflows.inference import datamodule_for, load_checkpoint, run_dir_of
    from visionkit_core.training.checkpoint import write_json

    loaded = load_checkpoint(ckpt)
    dm = datamodule_for(loaded, data, batch_size=batch_size, num_workers=num_workers)
    trainer = eval_trainer(accelerator)
    run = trainer.validate if stage == "validate" else trainer.test
    results = run(loaded.model, datamodule=dm, verbose=False)
    metrics = {k: round(float(v), 6) for k, v in sorted(results[0].items())} if results else {}
    out = output or run_dir_of(ckpt) / f"{stage}.json"
    doc = {
        "checkpoint": str(ckpt),
        "data": data or loaded.config.data,
        "split": "val" if stage == "validate" else "test",
        "metrics": metrics,
        "skipped_images": len(getattr(dm, "skipped_images", ()) or ()),
    }
    write_json(Path(out), doc)
    typer.echo(json.dumps(metrics, indent=2))
    typer.echo(f"Written: {out}")


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
