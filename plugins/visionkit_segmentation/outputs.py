"""What segmentation predictions become: IoU from a confusion matrix, mask PNGs, overlays.

Masks are written as single-channel (``L``) PNGs whose pixel values are class indices, at the
input's original size; overlays blend a fixed colour per class (Pascal VOC's colour map)
over the image. Every file is encoded in memory and written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit_core import Prediction, UsageError, atomic_write_bytes
from visionkit_core.kit.plots import colourise

OVERLAY_ALPHA = 0.5


def iou_from_confusion(matrix: Any) -> tuple[list[float], float, float]:
    """Per-class IoU (nan for a class in neither truth nor prediction), their mean, and pixel accuracy.

    ``matrix[t, p]`` counts pixels of true class ``t`` predicted ``p`` (ignored pixels excluded).
    """
    m = np.asarray(matrix.cpu() if hasattr(matrix, "cpu") else matrix, dtype=np.float64)
    tp = np.diag(m)
    union = m.sum(axis=0) + m.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = iou[~np.isnan(iou)]
    miou = float(present.mean()) if present.size else 0.0
    total = m.sum()
    return [float(v) for v in iou], miou, float(tp.sum() / total) if total > 0 else 0.0


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The image with the mask's colours blended in (background, class 0, left as it is)."""
    img = np.asarray(image, dtype=np.float32)
    colour = colourise(mask).astype(np.float32)
    fg = (np.asarray(mask) != 0)[..., None]
    blended = np.where(fg, img * (1 - alpha) + colour * alpha, img)
    return blended.round().clip(0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sizes_of(batch: Any, n: int, default: tuple[int, int]) -> list[tuple[int, int]]:
    """The original ``(h, w)`` of each input of a predict batch, however ``size`` was collated."""
    import torch

    sizes = batch.get("size") if isinstance(batch, dict) else None
    if sizes is None:
        return [tuple(default)] * n  # type: ignore[list-item]
    if isinstance(sizes, torch.Tensor):  # (N, 2)
        return [(int(h), int(w)) for h, w in sizes.tolist()]
    if len(sizes) == 2 and all(isinstance(s, torch.Tensor) and s.ndim == 1 and len(s) == n for s in sizes):
        # default_collate of (h, w) tuples: [tensor of heights, tensor of widths]
        return list(zip(sizes[0].tolist(), sizes[1].tolist(), strict=True))
    return [(int(s[0]), int(s[1])) for s in sizes]


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def summary_line(path: str, mask: np.ndarray, class_names: Sequence[str]) -> str:
    """``path: background 71.2%, circle 20.1%, ...`` (classes present, largest first)."""
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=len(class_names))
    total = max(1, int(counts.sum()))
    parts = [
        f"{class_names[c] if c < len(class_names) else c} {100.0 * counts[c] / total:.1f}%"
        for c in np.argsort(-counts)
        if counts[c] > 0
    ]
    return f"{path}: {mask.shape[1]}x{mask.shape[0]} " + ", ".join(parts)


def write_predictions(
    predictions: list[Prediction], output: Path | None, class_names: Sequence[str], with_overlay: bool
) -> list[str]:
    """Write ``output/<stem>.png`` masks (and ``<stem>_overlay.png``), or summarise without writing.

    Each prediction's value is the task's ``{"mask": (h, w) class indices}`` (None: unreadable)."""
    if output is not None:
        if output.exists() and not output.is_dir():
            raise UsageError(f"--output {str(output)!r} is a file; segmentation writes a folder of masks")
        output.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    used: dict[str, int] = {}
    for pred in predictions:
        if pred.value is None:
            lines.append(f"{pred.path}: unreadable, no mask written")
            continue
        mask = _as_numpy(pred.value["mask"])
        if pred.size is not None and tuple(mask.shape) != tuple(pred.size):
            raise UsageError(f"{pred.path}: predicted mask is {mask.shape}, the image {tuple(pred.size)}")
        if output is None:
            lines.append(summary_line(pred.path, mask, class_names))
            continue
        stem = Path(pred.path).stem
        used[stem] = used.get(stem, 0) + 1
        if used[stem] > 1:  # two inputs with one stem (from different folders): keep both
            stem = f"{stem}-{used[stem]}"
        target = output / f"{stem}.png"
        atomic_write_bytes(target, png_bytes(mask.astype(np.uint8)))
        line = f"{pred.path} -> {target}"
        if with_overlay:
            from visionkit_segmentation.data import decode_image

            image = decode_image(pred.path).permute(1, 2, 0).numpy()
            atomic_write_bytes(output / f"{stem}_overlay.png", png_bytes(overlay(image, mask)))
            line += f" (+ {stem}_overlay.png)"
        lines.append(line)
    return lines
