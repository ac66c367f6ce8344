"""``visionkit data check DIR`` and ``data convert SRC --to FORMAT OUT``, for any layout a plugin claims.

Neither knows a layout: ``check`` runs the check the claiming dataset registered; ``convert``
builds the claimed dataset as ``train`` would and calls its ``convert(to, output, workers)``.
"""

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
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="Check DIR as data for this task (a COCO folder serves detection, instance-segmentation "
            "and keypoints; default: the first plugin that recognises the layout).",
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
    claimed = plugins.claim_data(folder, plugins.registry.resolve("task", task).qualname if task else None)
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


@app.command("convert")
def convert(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="A data folder or CSV manifest (any layout an installed dataset plugin recognises), "
            "or a dataset name.",
        ),
    ],
    to: Annotated[str, typer.Option("--to", help="Target format: litdata (streaming shards).")],
    output: Annotated[
        str, typer.Argument(metavar="OUT", help="New or empty folder (or an object-store URL) to write.")
    ],
    val_split: Annotated[
        float | None,
        typer.Option(
            "--val-split", help="Validation fraction when SRC has no validation split (default 0.2)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of that split (default 42).")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=1, help="Processes checking and writing images.")
    ] = None,
) -> None:
    """Write SRC's splits in another format, e.g. litdata shards to train on with --data litdata:OUT.

    The splits are the ones ``train`` would use with the same --val-split and --seed.
    """
    from visionkit_core.errors import UsageError
    from visionkit_core.plugin.manager import get_plugins, use_plugins
    from visionkit_core.run.assemble import build_datamodule
    from visionkit_core.run.config import resolve
    from visionkit_core.run.resolve import resolve_data

    plugins = get_plugins()
    config = resolve(flags={"val_split": val_split, "seed": seed})
    with use_plugins(plugins):
        dataset, root = resolve_data(source, plugins)
        datamodule = build_datamodule(config, dataset, root)
        write = getattr(datamodule, "convert", None)
        if not callable(write):
            raise UsageError(
                f"dataset {dataset.qualname!r} ({dataset.origin.describe()}) cannot convert its data "
                "(its datamodule has no convert(to, output, workers) method)"
            )
        for line in write(to, output, workers=workers, echo=lambda m: typer.echo(m, err=True)):
            typer.echo(line)


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
