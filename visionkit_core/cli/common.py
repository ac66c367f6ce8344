"""Options and helpers shared by the commands that use a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

CkptOption = Annotated[
    Path, typer.Option("--ckpt", help="A checkpoint written by `visionkit train`.", show_default=False)
]
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data", "-d", help="ImageFolder root or dataset name (default: the checkpoint's training data)."
    ),
]
BatchOption = Annotated[
    int | None, typer.Option("--batch-size", help="Batch size (default: the checkpoint's).")
]
WorkersOption = Annotated[
    int | None, typer.Option("--num-workers", help="DataLoader workers (default: automatic).")
]
AcceleratorOption = Annotated[str, typer.Option("--accelerator", help="auto | cpu | gpu.")]


def eval_trainer(accelerator: str, **kwargs: Any) -> Any:
    """A Trainer for inference: one device, no logger, no checkpoints."""
    from visionkit_callbacks.progress import progress_bar

    from visionkit_core.training.runtime import quiet_lightning

    quiet_lightning()

    if accelerator == "auto":
        import torch

        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    from visionkit_core.run.assemble import make_trainer

    return make_trainer(
        {
            "accelerator": accelerator,
            "devices": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "callbacks": [progress_bar()],
            **kwargs,
        }
    )
