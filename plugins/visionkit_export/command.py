"""``visionkit export``: ONNX, TorchScript or OpenVINO (optionally INT8), checked before success.

This module imports only typer and the core's option types; torch and the exporters load when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionkit_core import UsageError
from visionkit_core.cli.app import BatchOption, CkptOption, DataOption, WorkersOption

#: the default --max-drop: fp32 artefacts should score what PyTorch scores; INT8 may lose a little
MAX_DROP = {False: 0.01, True: 0.02}


def export(
    ckpt: CkptOption,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="onnx | torchscript | openvino (IR .xml + .bin).", show_default=False
        ),
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output file (default: next to the checkpoint).")
    ] = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Post-training INT8: onnxruntime static quantisation (onnx) or NNCF (openvino).",
        ),
    ] = False,
    calibration_images: Annotated[
        int | None,
        typer.Option("--calibration-images", help="Training images that calibrate --int8 (default: 300)."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Score the exported model on the val split (or --data) with the task's metric, "
            "next to PyTorch; exit 1 when it drops by more than --max-drop.",
        ),
    ] = False,
    max_drop: Annotated[
        float | None,
        typer.Option(
            "--max-drop",
            help="Largest metric drop --check accepts (default: 0.01; 0.02 with --int8).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="With --check: check this already exported artefact (of --format) instead of "
            "exporting again.",
        ),
    ] = None,
    data: DataOption = None,
    batch_size: BatchOption = None,
    num_workers: WorkersOption = None,
) -> None:
    """Export a checkpoint; the exported model is run and compared with PyTorch before success."""
    from visionkit_export.export import check_export_dependencies, export_checkpoint

    fmt = fmt.lower()
    check_export_dependencies(fmt, int8)
    if max_drop is not None and max_drop < 0:
        raise UsageError(f"--max-drop must be 0 or more, got {max_drop}")
    if max_drop is not None and not check:
        raise UsageError("--max-drop applies to --check; add --check")
    if calibration_images is not None and not int8:
        raise UsageError("--calibration-images applies to --int8; add --int8")
    if data is not None and not (check or int8):
        raise UsageError("--data is what --check scores on and --int8 calibrates on; add one of them")
    if (batch_size is not None or num_workers is not None) and not check:
        raise UsageError("--batch-size and --num-workers apply to --check; add --check")
    if model is not None:
        if not check:
            raise UsageError("--model names an exported artefact to --check; add --check")
        if not model.is_file():
            raise UsageError(f"--model {str(model)!r} not found; give a file `visionkit export` wrote")
        path = model
    else:
        result = export_checkpoint(
            ckpt, fmt, output, int8=int8, calibration_images=calibration_images or 300, data=data
        )
        path = result.path
        kind = f"{fmt} INT8 (calibrated on {result.calibration_images} training images)" if int8 else fmt
        typer.echo(f"Exported {kind} to {path} (max abs difference vs PyTorch: {result.diff:.2e})")
        typer.echo(f"Task, preprocessing and outputs: {path}.json")
    if not check:
        return
    from visionkit_core.training.checkpoint import write_json
    from visionkit_export.check import check_export

    limit = MAX_DROP[int8] if max_drop is None else max_drop
    res = check_export(
        ckpt, path, fmt, data=data, max_drop=limit, batch_size=batch_size, num_workers=num_workers
    )
    better = "higher" if res.mode == "max" else "lower"
    typer.echo(f"Check on {res.images} validation images, {res.metric} ({better} is better):")
    typer.echo(f"  {'PyTorch':<13} {res.metric} {res.pytorch:.4f}   {res.pytorch_ms:8.2f} ms/image")
    label = f"{fmt}{' int8' if int8 else ''}"
    typer.echo(f"  {label:<13} {res.metric} {res.exported:.4f}   {res.exported_ms:8.2f} ms/image")
    verdict = "passed" if res.passed else "FAILED"
    typer.echo(f"  drop {res.drop:+.4f} (max allowed {limit}): {verdict}")
    report = path.with_name(path.name + ".check.json")
    write_json(report, {"artefact": str(path), "format": fmt, "int8": int8, **res.to_dict()})
    typer.echo(f"Check written: {report}")
    if not res.passed:
        typer.echo(
            f"error: the exported model scores {res.metric} {res.exported:.4f}, "
            f"PyTorch {res.pytorch:.4f}: a drop of {res.drop:.4f} > --max-drop {limit}",
            err=True,
        )
        raise typer.Exit(1)
