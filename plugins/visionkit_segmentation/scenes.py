"""Render the procedural ``scenes`` demo: coloured shapes on textured, noisy backgrounds.

numpy only (no torch), seeded per image so the same seed always draws the same scene. Each
scene has 1-3 shapes (circle, square, triangle) of random colour, size and position; later
shapes occlude earlier ones and the mask follows what is visible. Shape colours are jittered
around a tint per class (see ``CLASS_TINTS``).
"""

from __future__ import annotations

import numpy as np

from visionkit_core.kit.scenes import textured_background, to_uint8

CLASS_NAMES = ["background", "circle", "square", "triangle"]
#: Each shape class has its own tint (jittered per shape): backgrounds take any colour, so a
#: model still needs the shape where a background is near a tint, but learns in a few epochs.
CLASS_TINTS = np.array(
    [[0.5, 0.5, 0.5], [0.85, 0.25, 0.2], [0.2, 0.75, 0.3], [0.25, 0.3, 0.85]], dtype=np.float32
)


def _shape_mask(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """A boolean (S, S) mask of one shape of class ``cls`` at a random place and size."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = rng.uniform(0.14, 0.28) * size
    cy, cx = rng.uniform(radius, size - radius, 2)
    if cls == 1:  # circle
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    if cls == 2:  # square, axis aligned
        return (np.abs(yy - cy) <= radius * 0.85) & (np.abs(xx - cx) <= radius * 0.85)
    # triangle pointing up or down: inside the three half-planes of its edges
    flip = 1.0 if rng.random() < 0.5 else -1.0
    dy = (yy - cy) * flip
    top = dy >= -radius
    height = radius * 2.0
    half_width = (dy + radius) / height * radius * 1.1
    return top & (dy <= radius) & (np.abs(xx - cx) <= half_width)


def render_scene(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One scene: an (S, S, 3) uint8 RGB image and its (S, S) uint8 class-index mask."""
    rng = np.random.default_rng(seed)
    img = textured_background(rng, size, (0.1, 0.9), 0.05)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        inside = _shape_mask(rng, cls, size)
        colour = (CLASS_TINTS[cls] + rng.uniform(-0.2, 0.2, 3)).clip(0.0, 1.0).astype(np.float32)
        shade = 1.0 + rng.normal(0.0, 0.04, (size, size, 1)).astype(np.float32)  # texture on the shape
        img[inside] = (colour * shade)[inside]
        mask[inside] = cls
    return to_uint8(img), mask
