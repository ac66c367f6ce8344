"""``visionkit export``: ONNX or TorchScript from a checkpoint, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionkit_core.cli.common import CkptOption


def register(app: typer.Typer) -> None:
    """Add ``export`` to ``app``."""

    @app.command("export")
    def export(
        ckpt: CkptOption,
        fmt: Annotated[str, typer.Option("--format", "-f", help="onnx | torchscript.", show_default=False)],
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Output file (default: next to the checkpoint).")
        ] = None,
    ) -> None:
        """Export a checkpoint; the exported model is run and compared with PyTorch before success."""
        from visionkit_core.workflows.export import check_export_dependencies, export_checkpoint

        check_export_dependencies(fmt.lower())
        path, diff = export_checkpoint(ckpt, fmt.lower(), output)
        typer.echo(f"Exported {fmt} to {path} (max abs difference vs PyTorch: {diff:.2e})")
        typer.echo(f"Task, preprocessing and outputs: {path}.json")
