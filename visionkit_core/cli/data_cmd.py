"""``visionkit data check DIR``: what is wrong with an ImageFolder tree, before training on it."""

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
            help="An ImageFolder root: train/ and val/ (test/ optional), or one folder of class folders.",
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
    """Class counts per split, class folders that differ between splits, and every unreadable file.

    Read-only: nothing in DIR is written, moved or deleted. Exits 1 if a file cannot be
    read or the class folders are inconsistent, 0 otherwise.
    """
    from visionkit_imagefolder.check import check_tree, format_report

    from visionkit_core.errors import UsageError

    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UsageError(
            f"{str(folder)!r} {state}; give an ImageFolder root (train/ and val/ with one folder per "
            "class, or one folder of class folders)"
        )
    progress = None if as_json else _terminal_progress()
    report = check_tree(folder, workers, progress=progress)
    if progress is not None:
        print("\r\033[K", end="", file=sys.stderr, flush=True)  # clear the progress line
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(format_report(report))
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
