"""Render the keypoints demo: stick figures with seven named keypoints on textured backgrounds.

numpy only, seeded per image. Each scene holds one or two figures (head, neck, both hands,
hip, both feet) with random limb angles, size, position and colour; the limbs of the
figure's left side are drawn warmer than those of its right side, so left and right can be
told apart (and a horizontal flip, which swaps the names, keeps that true). Keypoints are
``(x, y, v)`` in pixels (pixel-edge coordinates, so the centre of pixel ``(0, 0)`` is
``(0.5, 0.5)``), all visible (``v = 2``); boxes are the tight extent of the drawn figure.
"""

from __future__ import annotations

import numpy as np

KEYPOINT_NAMES = ["head", "neck", "left_hand", "right_hand", "hip", "left_foot", "right_foot"]
#: Edges between keypoints (0-based): neck-head, arms, spine, legs.
SKELETON = [[1, 0], [1, 2], [1, 3], [1, 4], [4, 5], [4, 6]]
CATEGORY = "figure"
LEFT_TINT = np.array([0.95, 0.35, 0.15], dtype=np.float32)
RIGHT_TINT = np.array([0.15, 0.45, 0.95], dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    c0, c1 = rng.uniform(0.1, 0.6, 3), rng.uniform(0.1, 0.6, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) + 2.0) / 4.0
    img = c0 * (1.0 - t[..., None]) + c1 * t[..., None]
    return np.asarray(img + rng.normal(0.0, 0.04, (size, size, 3)), dtype=np.float32)


def _segment(mask_to: np.ndarray, p: np.ndarray, q: np.ndarray, width: float) -> np.ndarray:
    """Pixels within ``width / 2`` of the segment p-q (pixel centres)."""
    yy, xx = np.mgrid[0 : mask_to.shape[0], 0 : mask_to.shape[1]].astype(np.float32) + 0.5
    d = q - p
    t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return np.asarray((xx - p[0] - t * d[0]) ** 2 + (yy - p[1] - t * d[1]) ** 2 <= (width / 2) ** 2)


def _pose(rng: np.random.Generator, cx: float, top: float, height: float) -> np.ndarray:
    """The seven keypoints ``(7, 2)`` of a figure ``height`` pixels tall, head centre at (cx, top)."""
    head_r = 0.1 * height
    neck = np.array([cx, top + head_r * 1.6])
    hip = neck + np.array([rng.uniform(-0.08, 0.08) * height, 0.4 * height])
    arm, leg = 0.33 * height, 0.42 * height
    # angles from straight down; the figure's left side is on the image's right (it faces us)
    a_left, a_right = rng.uniform(0.3, 2.4), rng.uniform(0.3, 2.4)
    l_left, l_right = rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.6)
    left_hand = neck + arm * np.array([np.sin(a_left), np.cos(a_left)])
    right_hand = neck + arm * np.array([-np.sin(a_right), np.cos(a_right)])
    left_foot = hip + leg * np.array([np.sin(l_left), np.cos(l_left)])
    right_foot = hip + leg * np.array([-np.sin(l_right), np.cos(l_right)])
    head = np.array([cx, top])
    return np.stack([head, neck, left_hand, right_hand, hip, left_foot, right_foot]).astype(np.float32)


def render_scene(seed: int, size: int = 80) -> tuple[np.ndarray, list[np.ndarray], list[list[float]]]:
    """One scene: an (S, S, 3) uint8 image, per figure its ``(7, 3)`` keypoints (x, y, v=2) and box."""
    rng = np.random.default_rng(seed)
    img = _background(rng, size)
    figures: list[np.ndarray] = []
    boxes: list[list[float]] = []
    count = 1 if rng.random() < 0.6 else 2
    slots = [(0.0, 1.0)] if count == 1 else [(0.0, 0.5), (0.5, 1.0)]
    for lo, hi in slots:
        span = (hi - lo) * size
        height = float(rng.uniform(0.55, 0.85) * size * (1.0 if count == 1 else 0.9))
        half = 0.42 * height
        cx = float(rng.uniform(lo * size + min(half, span / 2), hi * size - min(half, span / 2)))
        top = float(rng.uniform(0.12 * height, size - 0.95 * height))
        pts = _pose(rng, cx, top, height)
        pts[:, 0] = pts[:, 0].clip(1.0, size - 1.0)
        pts[:, 1] = pts[:, 1].clip(1.0, size - 1.0)
        width = max(2.0, 0.06 * height)
        body = (rng.uniform(0.75, 1.0, 3)).astype(np.float32)
        mask = np.zeros((size, size), dtype=bool)
        for a, b in SKELETON:
            seg = _segment(mask, pts[a], pts[b], width)
            tint = (
                LEFT_TINT
                if 2 in (a, b) or 5 in (a, b)
                else RIGHT_TINT
                if 3 in (a, b) or 6 in (a, b)
                else body
            )
            img[seg] = tint + rng.normal(0.0, 0.03, 3)
            mask |= seg
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        head = (xx - pts[0, 0]) ** 2 + (yy - pts[0, 1]) ** 2 <= (0.1 * height) ** 2
        img[head] = body
        mask |= head
        ys, xs = np.nonzero(mask)
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
        figures.append(np.concatenate([pts, np.full((len(pts), 1), 2.0, np.float32)], axis=1))
    return (img.clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), figures, boxes
