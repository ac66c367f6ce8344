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


# -- MediaSample rendering (any task: captions, masks, boxes) ------------------------------


def mask_colours(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map, ``(n, 3)`` uint8 (class 0 black); 255 (ignored) shows white."""
    from visionkit_core.kit.plots import palette

    colours = palette(n)
    if n > 255:
        colours[255] = (255, 255, 255)
    return colours


def colour_mask(mask: Any) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of an ``(H, W)`` class-index mask."""
    import numpy as np

    return mask_colours()[np.asarray(mask, dtype=np.int64).clip(0, 255)]


def sample_panels(sample: Any) -> list[tuple[np.ndarray, str]]:
    """What one MediaSample shows: the image, plus truth and prediction pictures for masks."""
    panels = [(sample.image, sample.caption)]
    if sample.true_mask is not None:
        panels.append((colour_mask(sample.true_mask), "truth"))
    if sample.pred_mask is not None:
        panels.append((colour_mask(sample.pred_mask), "prediction"))
    return panels


def media_grid(samples: Sequence[Any], class_names: Sequence[str] | None) -> Figure:
    """One row per sample: the image (boxes drawn on it: truth green, prediction red) and its masks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows = [sample_panels(s) for s in samples]
    cols = max(len(r) for r in rows)
    if cols == 1:  # captions only (classification): a square grid, like prediction_grid
        cols = max(1, math.ceil(math.sqrt(len(rows))))
        rows = [[r[0] for r in rows[i : i + cols]] for i in range(0, len(rows), cols)]
        owners = [list(samples[i : i + cols]) for i in range(0, len(samples), cols)]
    else:
        owners = [[s] * len(r) for s, r in zip(samples, rows, strict=True)]
    fig = Figure(figsize=(2.2 * cols, 2.4 * len(rows)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c >= len(row):
                continue
            picture, title = row[c]
            ax.imshow(picture, interpolation="nearest")
            sample = owners[r][c]
            right = sample.correct if picture is sample.image else None
            colour = {True: "tab:green", False: "tab:red"}.get(right)  # type: ignore[call-overload]
            ax.set_title(title, fontsize=8, **({"color": colour} if colour else {}))
            if picture is not sample.image:
                continue
            for boxes, labels, colour in (
                (sample.true_boxes, sample.true_labels, "tab:green"),
                (sample.pred_boxes, sample.pred_labels, "tab:red"),
            ):
                for i, (x0, y0, x1, y1) in enumerate(boxes or []):
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1))
                    if labels is not None and i < len(labels):
                        name = _name(int(labels[i]), class_names)
                        ax.text(x0, y0, name, color=colour, fontsize=6, va="bottom")
    return fig


def _name(index: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[index]) if class_names and 0 <= index < len(class_names) else str(index)


def wandb_media(samples: Sequence[Any], class_names: Sequence[str] | None) -> dict[str, list[Any]]:
    """``log_image`` keyword lists: ``caption`` always, ``masks`` and ``boxes`` where samples have them."""
    import numpy as np

    labels = {i: _name(i, class_names) for i in range(len(class_names or []))}
    out: dict[str, list[Any]] = {"caption": [s.caption for s in samples]}
    if any(s.true_mask is not None or s.pred_mask is not None for s in samples):
        out["masks"] = [
            {
                key: {"mask_data": np.asarray(mask, dtype=np.uint8), "class_labels": labels}
                for key, mask in (("ground_truth", s.true_mask), ("prediction", s.pred_mask))
                if mask is not None
            }
            for s in samples
        ]
    if any(s.true_boxes is not None or s.pred_boxes is not None for s in samples):
        out["boxes"] = [_wandb_boxes(s, labels) for s in samples]
    return out


def _wandb_boxes(sample: Any, labels: dict[int, str]) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    for key, boxes, classes, scores in (
        ("ground_truth", sample.true_boxes, sample.true_labels, None),
        ("predictions", sample.pred_boxes, sample.pred_labels, sample.pred_scores),
    ):
        if boxes is None:
            continue
        data = []
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            cls = int(classes[i]) if classes is not None and i < len(classes) else 0
            item: dict[str, Any] = {
                "position": {"minX": float(x0), "minY": float(y0), "maxX": float(x1), "maxY": float(y1)},
                "domain": "pixel",
                "class_id": cls,
                "box_caption": labels.get(cls, str(cls)),
            }
            if scores is not None and i < len(scores):
                item["scores"] = {"score": float(scores[i])}
            data.append(item)
        groups[key] = {"box_data": data, "class_labels": labels or {0: "0"}}
    return groups
