"""The ``visionkit serve`` command: options checked here, the server in :mod:`visionkit_serve.server`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visionkit_core import UsageError, require


def serve(
    ckpt: Annotated[
        Path | None,
        typer.Option("--ckpt", help="A checkpoint written by `visionkit train`.", show_default=False),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="An exported model (.onnx, .torchscript.pt, OpenVINO .xml) with its sidecar <model>.json.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind (127.0.0.1: this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    max_batch_size: Annotated[
        int,
        typer.Option("--max-batch-size", help="Requests batched into one forward pass (dynamic batching)."),
    ] = 8,
    batch_timeout: Annotated[
        float, typer.Option("--batch-timeout", help="Seconds to wait for a batch to fill.")
    ] = 0.01,
    workers: Annotated[int, typer.Option("--workers", help="Inference worker processes.")] = 1,
    max_request_mb: Annotated[
        float, typer.Option("--max-request-mb", help="Largest request body accepted (413 above it).")
    ] = 20.0,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds a request may wait (504 after).")
    ] = 60.0,
) -> None:
    """Serve a checkpoint or an exported model over HTTP: POST /predict, GET /health, GET /info."""
    if (ckpt is None) == (model is None):
        raise UsageError("give exactly one of --ckpt CHECKPOINT or --model EXPORTED_MODEL")
    source = ckpt if ckpt is not None else model
    assert source is not None
    if not source.is_file():
        raise UsageError(f"{'--ckpt' if ckpt else '--model'} {str(source)!r} not found")
    if model is not None and not Path(f"{model}.json").is_file():
        raise UsageError(
            f"--model {str(model)!r} has no sidecar {model!s}.json; serve a file `visionkit export` wrote"
        )
    for name, value in (("--max-batch-size", max_batch_size), ("--workers", workers), ("--port", port)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    if batch_timeout < 0 or max_request_mb <= 0 or timeout <= 0:
        raise UsageError("--batch-timeout must be 0 or more; --max-request-mb and --timeout more than 0")
    for module in ("litserve", "multipart"):
        require(module, "serve", "visionkit serve")
    from visionkit_serve.server import run

    run(
        ckpt=ckpt,
        model=model,
        host=host,
        port=port,
        max_batch_size=max_batch_size,
        batch_timeout=batch_timeout,
        workers=workers,
        max_bytes=int(max_request_mb * 1024 * 1024),
        timeout=timeout,
    )
