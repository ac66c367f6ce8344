"""Render the instance segmentation demo: tinted shapes with exact polygon outlines on textured backgrounds.

numpy and Pillow only, seeded per image. Each scene holds 1-4 non-overlapping shapes (circle,
square, triangle), each drawn from its polygon, so the polygon *is* the mask's outline (what a
COCO annotation stores). Colours are jittered around a tint per class.
"""

from __future__ import annotations

import math

import numpy as np

CLASS_NAMES = ["circle", "square", "triangle"]
CLASS_TINTS = np.array([[0.85, 0.25, 0.2], [0.2, 0.75, 0.3], [0.25, 0.3, 0.85]], dtype=np.float32)
MAX_SHAPES = 4


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A colour gradient with low-frequency waves and pixel noise, float32 (S, S, 3) in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    c0, c1 = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1.0)[..., None] / 2.0
    img = c0 * (1.0 - t) + c1 * t
    freq = rng.uniform(1.0, 5.0, 2) * 2 * np.pi
    img = img + rng.uniform(0.03, 0.08, 3) * np.sin(freq[0] * xx + freq[1] * yy)[..., None]
    return (img + rng.normal(0.0, 0.03, (size, size, 3))).astype(np.float32)


def polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> list[float]:
    """The outline of a shape of class ``cls`` as a flat ``[x1, y1, x2, y2, ...]`` list (pixels)."""
    n = 24 if cls == 0 else 4 if cls == 1 else 3  # a circle is a 24-gon
    turns = [angle + 2 * math.pi * k / n for k in range(n)]
    corners = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in turns]
    return [round(v, 2) for xy in corners for v in xy]


def render_scene(seed: int, size: int = 64) -> tuple[np.ndarray, list[list[float]], list[int]]:
    """One scene: an (S, S, 3) uint8 image, one polygon per shape and their class indices."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = _background(rng, size)
    polygons: list[list[float]] = []
    labels: list[int] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        for _attempt in range(20):  # where it does not touch an earlier shape
            r = float(rng.uniform(0.1, 0.22) * size)
            cx, cy = (float(v) for v in rng.uniform(r, size - r, 2))
            if all(math.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
                break
        else:
            continue
        poly = polygon(cls, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
        canvas = Image.new("L", (size, size), 0)
        ImageDraw.Draw(canvas).polygon(poly, fill=1)
        mask = np.asarray(canvas, dtype=bool)
        if mask.sum() < 12:
            continue
        colour = (CLASS_TINTS[cls] + rng.uniform(-0.12, 0.12, 3)).clip(0.0, 1.0)
        img[mask] = colour * (1.0 + rng.normal(0.0, 0.03, (int(mask.sum()), 1)))
        placed.append((cx, cy, r))
        polygons.append(poly)
        labels.append(cls)
    return (img.clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), polygons, labels
