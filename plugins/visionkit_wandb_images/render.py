"""Turn a validation batch into displayable images and a captioned matplotlib grid.

matplotlib is used through its object API with the Agg canvas (no pyplot state, no global
backend switch), so this works headless and never disturbs a user's interactive session.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images, labels)`` from a ``(images, labels, ...)`` sequence or an ``image``/``label`` dict."""
    import torch

    if isinstance(batch, dict):
        images = next((batch[k] for k in ("image", "images", "input") if k in batch), None)
        labels = next((batch[k] for k in ("label", "labels", "target", "targets") if k in batch), None)
    elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
        images, labels = batch[0], batch[1]
    else:
        return None
    if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)):
        return None
    if images.ndim != 4 or labels.ndim != 1:
        return None
    return images, labels


def captions(preds: Sequence[int], labels: Sequence[int], class_names: Sequence[str] | None) -> list[str]:
    """``pred: <name> / true: <name>`` per image; an index without a name is shown as the index."""

    def name(index: int) -> str:
        return str(class_names[index]) if class_names and 0 <= index < len(class_names) else str(index)

    return [f"pred: {name(p)} / true: {name(t)}" for p, t in zip(preds, labels, strict=True)]


def to_display(pl_module: Any, images: torch.Tensor) -> np.ndarray:
    """Normalised ``(N, C, H, W)`` images -> ``(N, H, W, C)`` (or ``(N, H, W)``) float32 in [0, 1].

    Uses ``pl_module.denormalize(images)`` when the module has it (uint8 or 0-255 results are
    rescaled), otherwise scales each image to its own min-max range.
    """
    import torch

    denormalize = getattr(pl_module, "denormalize", None)
    if callable(denormalize):
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


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """[0, 1] float images -> a list of uint8 arrays (what wandb.Image takes without guessing)."""
    import numpy as np

    return [np.round(img * 255.0).astype(np.uint8) for img in images]


def prediction_grid(images: np.ndarray, captions: Sequence[str], correct: Sequence[bool]) -> Figure:
    """A grid of images titled with their captions (green when correct, red when wrong)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(images)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(2.2 * cols, 2.4 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        img = images[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(captions[i], fontsize=8, color="tab:green" if correct[i] else "tab:red")
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (a reader never sees a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
