"""Tiny real image files for tests and smoke runs (numpy and Pillow, imported when called)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def write_images(
    folder: Path, count: int, *, size: int = 32, prefix: str = "image", suffix: str = ".png", seed: int = 0
) -> list[Path]:
    """Write ``count`` small real RGB images (random colours, PNG by default) into ``folder``."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        path = folder / f"{prefix}_{i}{suffix}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def make_imagefolder(
    root: Path,
    classes: Sequence[str] = ("a", "b"),
    per_class: int = 4,
    *,
    size: int = 32,
    splits: Sequence[str] = ("train", "val"),
    seed: int = 0,
) -> Path:
    """Write an ImageFolder tree ``root/<split>/<class>/*.png`` of tiny real PNGs; return ``root``.

    Each class has its own dominant colour (so a model can learn it) plus noise. With
    ``splits=()`` the classes go straight under ``root`` (the ``--val-split`` layout).
    """
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for index, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.zeros((size, size, 3), dtype=np.uint8)
                pixels[..., index % 3] = 160 + 40 * (index // 3 % 2)
                pixels += rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root
