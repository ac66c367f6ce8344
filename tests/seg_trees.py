"""Tiny segmentation folders for the segmentation tests: the masks layout and Pascal VOC, real PNG/JPEG files.

Each image's red channel encodes its mask (``class * 60``), so a test can check that a
transform kept image and mask aligned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["background", "disc", "bar"]


def scene(index: int, size: int = 32, height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A disc (class 1) and a bar (class 2) on background; the image's red channel is ``mask * 60``."""
    h, w = height or size, size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(index)
    cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= (min(h, w) // 5) ** 2] = 1
    mask[:, (index % 3) * w // 4 : (index % 3) * w // 4 + w // 8] = 2
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = mask * 60
    image[..., 1] = rng.integers(0, 255, (h, w))
    image[..., 2] = 128
    return image, mask


def make_masks_tree(
    root: Path, counts: dict[str, int] | None = None, size: int = 32, classes_txt: bool = True
) -> Path:
    counts = counts or {"train": 8, "val": 4}
    for split, n in counts.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            image, mask = scene(i + (1000 if split != "train" else 0), size)
            Image.fromarray(image).save(root / split / "images" / f"{split}_{i:03d}.png")
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{split}_{i:03d}.png")
    if classes_txt:
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def voc_palette() -> list[int]:
    colours = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 252)
    return [*colours, 224, 224, 192]  # index 255: VOC's border colour


def make_voc_tree(root: Path, counts: dict[str, int] | None = None, size: int = 32) -> Path:
    """JPEGImages/*.jpg, SegmentationClass/*.png (palette, 255 border), ImageSets/Segmentation/*.txt."""
    counts = counts or {"train": 6, "val": 3}
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    k = 0
    for split, n in counts.items():
        stems = []
        for _ in range(n):
            stem = f"2007_{k:06d}"
            image, mask = scene(k, size)
            mask[0, :] = 255  # the border VOC draws around objects
            Image.fromarray(image).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
            pal = Image.fromarray(mask, mode="P")
            pal.putpalette(voc_palette())
            pal.save(root / "SegmentationClass" / f"{stem}.png")
            stems.append(stem)
            k += 1
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root
