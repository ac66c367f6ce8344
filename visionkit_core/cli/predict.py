"""``visionkit predict``: a checkpoint's predictions for image files and folders, any task."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from visionkit_core.cli.common import AcceleratorOption, CkptOption, WorkersOption
from visionkit_core.errors import UsageError


def register(app: typer.Typer) -> None:
    """Add ``predict`` to ``app``."""

    @app.command("predict")
    def predict(
        inputs: Annotated[
            list[Path],
            typer.Argument(help="Image files and/or folders (searched recursively).", show_default=False),
        ],
        ckpt: CkptOption,
        output: Annotated[
            Path | None,
            typer.Option(
                "--output",
                "-o",
                help="Where to write: FILE.csv / FILE.json (classification, detection) or a folder "
                "(segmentation masks); default: a table on stdout.",
            ),
        ] = None,
        topk: Annotated[int, typer.Option("--topk", "-k", help="Classes to report per image.")] = 5,
        threshold: Annotated[
            float | None,
            typer.Option("--threshold", help="Score threshold (detection boxes, multi-label sets)."),
        ] = None,
        overlay: Annotated[
            bool, typer.Option("--overlay", help="Also write colour overlays / drawn boxes with the output.")
        ] = False,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 32,
        num_workers: WorkersOption = None,
        accelerator: AcceleratorOption = "auto",
    ) -> None:
        """Predict with a checkpoint; needs no other flag (the checkpoint describes model, data and task)."""
        if topk < 1:
            raise UsageError(f"--topk must be at least 1, got {topk}")
        from visionkit_core.workflows.predict import predict as run_predict

        options = {"topk": topk, "threshold": threshold, "overlay": overlay}
        result = run_predict(ckpt, inputs, output, options, batch_size, num_workers, accelerator)
        for path in result.unreadable:
            typer.echo(f"warning: skipped unreadable image {path!r}", err=True)
        for line in result.lines:
            typer.echo(line, err=output is not None)
        if result.unreadable and not result.predicted:
            sys.exit(1)
