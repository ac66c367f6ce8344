"""``visionkit data check DIR``: what is wrong with a data folder, before training on it (any layout)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Inspect image data before training on it.", no_args_is_help=True)


@app.command("check")
def check(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="A data folder in any layout an installed dataset plugin recognises (ImageFolder, "
            "segmentation masks, Pascal VOC, ...).",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-w", min=1, help="Decoding processes (default: one per CPU; 1: decode here)."
        ),
    ] = None,
) -> None:
    """Counts per split, layout problems, and every bad file (unreadable image, bad mask, bad box).

    The dataset plugin that recognises DIR's layout checks it. Read-only: nothing in DIR is
    written, moved or deleted. Exits 1 if anything would be skipped or refused, 0 otherwise.
    """
    from visionkit_core.errors import UsageError
    from visionkit_core.plugin.manager import get_plugins

    if not folder.exists():
        raise UsageError(
            f"{str(folder)!r} does not exist; give a data folder (see `visionkit datasets list`)"
        )
    plugins = get_plugins()
    claimed = plugins.claim_data(folder)
    if claimed is None:
        raise UsageError(
            f"no installed dataset plugin recognises {str(folder)!r}; see `visionkit datasets list`"
        )
    dataset = plugins.registry.resolve("dataset", claimed)
    check_data = dataset.load_check()  # registered apart from the datamodule: no torch import here
    if check_data is None:
        raise UsageError(
            f"dataset {dataset.qualname!r} ({dataset.origin.describe()}) registers no data check"
        )
    progress = None if as_json else _terminal_progress()
    report = check_data(folder, workers, progress)
    if progress is not None:
        print("\r\033[K", end="", file=sys.stderr, flush=True)  # clear the progress line
    if as_json:
        typer.echo(json.dumps({"dataset": dataset.qualname, **report.as_dict()}, indent=2))
    else:
        typer.echo(report.format())
    if not report.ok:
        raise typer.Exit(1)


def _terminal_progress() -> Callable[[int], None] | None:
    """``progress(n)`` drawing "checked N images" every 500 on a terminal; None when not a terminal."""
    if not sys.stderr.isatty():
        return None
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if done % 500 < n:
            print(f"\rchecked {done} images", end="", file=sys.stderr, flush=True)

    return tick
