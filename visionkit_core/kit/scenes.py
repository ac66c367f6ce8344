"""Procedural demo scenes: the parts the built-in demos' renderers share (numpy only).

A demo renders each scene from its own seed (``np.random.default_rng(seed)``), so the same seed
always draws the same scene; :func:`textured_background` draws the background every shape is
painted on, :func:`to_uint8` turns the float picture into the image that is saved.
"""

from __future__ import annotations

import numpy as np


def textured_background(
    rng: np.random.Generator, size: int, colours: tuple[float, float] = (0.15, 0.85), noise: float = 0.04
) -> np.ndarray:
    """A float32 ``(S, S, 3)`` picture around ``[0, 1]``: a gradient between two colours drawn from
    ``colours``, three low-frequency waves (nothing in it looks like a shape's edge) and pixel
    noise of standard deviation ``noise``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    c0, c1 = rng.uniform(*colours, 3), rng.uniform(*colours, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1.0) / 2.0
    img = c0 * (1.0 - t[..., None]) + c1 * t[..., None]
    for _ in range(3):
        freq = rng.uniform(1.0, 6.0, 2) * 2 * np.pi
        wave = np.sin(freq[0] * xx + freq[1] * yy + rng.uniform(0, 2 * np.pi))[..., None]
        img = img + rng.uniform(0.03, 0.1, 3) * wave
    return (img + rng.normal(0.0, noise, (size, size, 3))).astype(np.float32)


def to_uint8(picture: np.ndarray) -> np.ndarray:
    """A float picture (``[0, 1]``, clipped) -> a uint8 image, rounded."""
    return (picture.clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
