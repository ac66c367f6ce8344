"""Render the procedural ``shapes`` demo: coloured shapes with tight boxes on textured backgrounds.

numpy only (no torch), seeded per image so the same seed always draws the same scene. Each
scene has 0-4 non-overlapping shapes (circle, square, triangle) of random size, position
and colour jittered around a tint per class; a few scenes are empty (negatives). Every box
is the tight pixel extent of the drawn shape, ``[x0, y0, x1, y1]`` with exclusive ends.
"""

from __future__ import annotations

import numpy as np

from visionkit_core.kit.scenes import textured_background, to_uint8

CLASS_NAMES = ["circle", "square", "triangle"]
#: Each class has its own tint (jittered per shape), so a small detector learns in a few epochs.
CLASS_TINTS = np.array([[0.85, 0.25, 0.2], [0.2, 0.75, 0.3], [0.25, 0.3, 0.85]], dtype=np.float32)
EMPTY_SHARE = 0.05
MAX_SHAPES = 4


def _shape(cls: int, cy: float, cx: float, radius: float, flip: bool, size: int) -> np.ndarray:
    """The boolean (S, S) mask of one shape of class ``cls`` centred at (cy, cx)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if cls == 0:  # circle
        return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2)
    if cls == 1:  # axis-aligned square
        half = radius * 0.85
        return np.asarray((np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half))
    dy = (yy - cy) * (-1.0 if flip else 1.0)  # triangle pointing up (or down)
    half_width = (dy + radius) / (2.0 * radius) * radius * 1.1
    return np.asarray((dy >= -radius) & (dy <= radius) & (np.abs(xx - cx) <= half_width))


def _overlaps(box: list[float], boxes: list[list[float]], margin: float) -> bool:
    return any(
        box[0] < b[2] + margin
        and b[0] < box[2] + margin
        and box[1] < b[3] + margin
        and b[1] < box[3] + margin
        for b in boxes
    )


def render_scene(seed: int, size: int = 96) -> tuple[np.ndarray, list[list[float]], list[int]]:
    """One scene: an (S, S, 3) uint8 RGB image, its boxes (pixels) and their class indices."""
    rng = np.random.default_rng(seed)
    img = textured_background(rng, size)
    boxes: list[list[float]] = []
    labels: list[int] = []
    count = 0 if rng.random() < EMPTY_SHARE else int(rng.integers(1, MAX_SHAPES + 1))
    for _ in range(count):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        for _attempt in range(20):  # place it where it does not touch an earlier shape
            radius = float(rng.uniform(0.08, 0.2) * size)
            cy, cx = (float(v) for v in rng.uniform(radius, size - radius, 2))
            mask = _shape(cls, cy, cx, radius, bool(rng.random() < 0.5), size)
            ys, xs = np.nonzero(mask)
            if ys.size < 9:
                continue
            box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
            if not _overlaps(box, boxes, margin=2.0):
                break
        else:
            continue
        colour = (CLASS_TINTS[cls] + rng.uniform(-0.15, 0.15, 3)).clip(0.0, 1.0).astype(np.float32)
        shade = 1.0 + rng.normal(0.0, 0.04, (size, size, 1)).astype(np.float32)
        img[mask] = (colour * shade)[mask]
        boxes.append(box)
        labels.append(cls)
    return to_uint8(img), boxes, labels
