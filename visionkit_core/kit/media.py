"""Figures and images for evaluation callbacks: headless matplotlib, atomic PNG/CSV, logger upload.

The names are public from ``visionkit_core`` too (``from visionkit_core import save_png``).

matplotlib is used through its object API with the Agg canvas (no pyplot state, no global
backend switch), so plots work headless and never disturb a user's interactive session.
Nothing heavy is imported until a function is called.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionkit_core.training.checkpoint import atomic_write_bytes

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (a reader never sees a half-written file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getbuffer())
    return path


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV file atomically."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def png_bytes(array: np.ndarray) -> bytes:
    """An ``(H, W)`` or ``(H, W, 3)`` uint8 array encoded as PNG (8-bit, or 16-bit for uint16)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, array: np.ndarray) -> None:
    """``array`` as a PNG file at ``path``, written atomically."""
    atomic_write_bytes(path, png_bytes(array))


def to_display(pl_module: Any, images: torch.Tensor) -> np.ndarray:
    """Model-input ``(N, C, H, W)`` images -> ``(N, H, W, C)`` (or ``(N, H, W)``) float32 in [0, 1].

    uint8 images are scaled by 1/255; float images go through ``pl_module.denormalize`` when
    the module has it, otherwise each is scaled to its own min-max range.
    """
    import torch

    denormalize = getattr(pl_module, "denormalize", None)
    if images.dtype == torch.uint8:
        shown = images.detach().float().cpu() / 255.0
    elif callable(denormalize):
        shown = denormalize(images)
        scale_255 = shown.dtype == torch.uint8
        shown = shown.detach().float().cpu()
        if scale_255 or shown.max() > 1.5:
            shown = shown / 255.0
    else:
        shown = images.detach().float().cpu()
        lo = shown.amin(dim=(1, 2, 3), keepdim=True)
        hi = shown.amax(dim=(1, 2, 3), keepdim=True)
        shown = (shown - lo) / (hi - lo).clamp_min(1e-8)
    shown = shown.clamp(0.0, 1.0).permute(0, 2, 3, 1)
    if shown.shape[-1] not in (3, 4):  # grey, or channels matplotlib cannot show: first one as grey
        shown = shown[..., 0]
    result: np.ndarray = shown.numpy()
    return result


def prediction_grid(images: Sequence[np.ndarray], captions: Sequence[str], correct: Sequence[bool]) -> Figure:
    """A grid of images titled with their captions (green when correct, red when wrong)."""
    n = len(images)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    fig = new_figure(2.2 * cols, 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        img = images[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(captions[i], fontsize=8, color="tab:green" if correct[i] else "tab:red")
    return fig


def log_figure(trainer: Any, name: str, fig: Figure, png: Path) -> None:
    """Send ``fig`` to each TensorBoard / wandb logger as ``plots/<name>``; other loggers skip it."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(f"plots/{name}", fig, global_step=trainer.global_step, close=False)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=f"plots/{name}", images=[str(png)], step=trainer.global_step)


def never_fail(what: str, write: Callable[..., object], *args: Any) -> None:
    """Call ``write``; on an error warn instead: plots must never fail a finished training run."""
    try:
        write(*args)
    except Exception as err:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(f"could not write the {what}: {type(err).__name__}: {err}")


__all__ = ["log_figure", "never_fail", "new_figure", "prediction_grid", "save_png", "to_display", "write_csv"]
