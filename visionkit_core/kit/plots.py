"""Figures for evaluation callbacks, from plain values: curves, per-class bars, media grid, mask colours.

Torch-free (numpy; matplotlib imported inside the functions and used through its object API
with the Agg canvas, no pyplot state), so prediction writers and data tools can use them.

- :func:`curves_figure`: per-epoch values, one panel per group of columns;
- :func:`per_class_bars`: one horizontal bar per class (n/a where a class has no value);
- :func:`media_grid`: any :class:`~visionkit_core.MediaSample` (captions, masks, boxes);
- :func:`palette` / :func:`colourise`: class-index masks in Pascal VOC's colours;
- :func:`cell`: a number as a CSV cell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from visionkit_core.kit.media import name_of, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: One history row: ``epoch`` and each column's value (None: not logged that epoch).
Row = dict[str, float | None]


def cell(value: float | None, *, integer: bool = False) -> str:
    """A CSV cell: empty for a missing (None or NaN) value, else the number in 6 significant digits."""
    if value is None or math.isnan(value):
        return ""
    return str(int(value)) if integer else f"{value:.6g}"


def curves_figure(history: Sequence[Row], panels: Sequence[tuple[str, Sequence[str]]]) -> Figure:
    """One panel per ``(title, columns)`` of per-epoch values; a panel never logged says so."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(4.4 * len(panels), 3.8)
    for ax, (title, columns) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for column in columns:
            points = [(row["epoch"], row[column]) for row in history if row.get(column) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=column)
        if ax.lines and len(columns) > 1:
            ax.legend()
        elif not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return fig


def per_class_bars(values: Mapping[str, float | None], xlabel: str, title: str = "") -> Figure:
    """Horizontal bars, one per class, in ``[0, 1]``; a class without a value (None/NaN) shows n/a."""
    names = list(values)
    shown = [None if v is None or math.isnan(v) else float(v) for v in values.values()]
    fig = new_figure(6.0, 0.9 + 0.3 * len(names))
    ax = fig.subplots()
    ax.barh(range(len(names)), [v or 0.0 for v in shown], color="tab:blue")
    ax.set_yticks(range(len(names)), [n.replace("$", r"\$") for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel=xlabel, title=title)
    for i, v in enumerate(shown):
        ax.text(min(v or 0.0, 0.9) + 0.01, i, "n/a" if v is None else f"{v:.2f}", va="center", fontsize=7)
    return fig


def palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map: ``(n, 3)`` uint8, class 0 black, then well-separated colours."""
    colours = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for k in range(3):
                rgb[k] |= ((c >> k) & 1) << (7 - j)
            c >>= 3
        colours[i] = rgb
    return colours


def colourise(mask: Any) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of a class-index mask (255, ignored, shows white)."""
    colours = palette()
    colours[255] = (255, 255, 255)
    return colours[np.asarray(mask, dtype=np.int64).clip(0, 255)]  # type: ignore[no-any-return]


def _panels(sample: Any) -> list[tuple[Any, str]]:
    """What one sample shows: the image, plus truth and prediction pictures for masks."""
    panels = [(sample.image, sample.caption)]
    if sample.true_mask is not None:
        panels.append((colourise(sample.true_mask), "truth"))
    if sample.pred_mask is not None:
        panels.append((colourise(sample.pred_mask), "prediction"))
    return panels


def media_grid(samples: Sequence[Any], class_names: Sequence[str] | None = None) -> Figure:
    """A grid of :class:`~visionkit_core.MediaSample`: one row per sample (image | truth | prediction)
    for masks; boxes and visible keypoints drawn on the image (truth green, prediction red, boxes
    with scores); captions only
    (classification): a square grid, titles green or red when the sample says right or wrong."""
    from matplotlib.patches import Rectangle

    rows = [_panels(s) for s in samples]
    cols = max(len(r) for r in rows)
    if cols == 1:  # one picture per sample: a square grid
        cols = max(1, math.ceil(math.sqrt(len(rows))))
        rows = [[r[0] for r in rows[i : i + cols]] for i in range(0, len(rows), cols)]
        owners = [list(samples[i : i + cols]) for i in range(0, len(samples), cols)]
    else:
        owners = [[s] * len(r) for s, r in zip(samples, rows, strict=True)]
    fig = new_figure(2.2 * cols, 2.4 * len(rows))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c >= len(row):
                continue
            picture, title = row[c]
            sample = owners[r][c]
            ax.imshow(picture, interpolation="nearest")
            right = sample.correct if picture is sample.image else None
            colour = None if right is None else ("tab:green" if right else "tab:red")
            ax.set_title(title, fontsize=8, **({"color": colour} if colour else {}))
            if picture is not sample.image:
                continue
            scores = sample.pred_scores
            for boxes, labels, colour, scored in (
                (sample.true_boxes, sample.true_labels, "tab:green", None),
                (sample.pred_boxes, sample.pred_labels, "tab:red", scores),
            ):
                for i, (x0, y0, x1, y1) in enumerate(boxes or []):
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1))
                    text = name_of(labels[i], class_names) if labels is not None and i < len(labels) else ""
                    if scored is not None and i < len(scored):
                        text += f" {scored[i]:.2f}"
                    if text:
                        ax.text(x0, y0, text.strip(), color=colour, fontsize=6, va="bottom")
            for objects, colour in ((sample.true_keypoints, "tab:green"), (sample.pred_keypoints, "tab:red")):
                shown = [(x, y) for points in objects or [] for x, y, visible in points if visible]
                if shown:
                    ax.scatter(*zip(*shown, strict=True), s=6, color=colour)
    return fig
