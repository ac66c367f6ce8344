"""Options and helpers shared by the commands that use a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CkptOption = Annotated[
    Path, typer.Option("--ckpt", help="A checkpoint written by `visionkit train`.", show_default=False)
]
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data", "-d", help="Data folder or dataset name (default: the checkpoint's training data)."
    ),
]
BatchOption = Annotated[
    int | None, typer.Option("--batch-size", help="Batch size (default: the checkpoint's).")
]
WorkersOption = Annotated[
    int | None, typer.Option("--num-workers", help="DataLoader workers (default: automatic).")
]
AcceleratorOption = Annotated[str, typer.Option("--accelerator", help="auto | cpu | gpu.")]
