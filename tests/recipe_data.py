"""Small real data for the classification-recipe tests: CSV manifests of generated JPEGs."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

#: The multi-label classes: each is a colour patch in its own quadrant, so label sets are learnable.
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
_QUADRANT = {"red": (0, 0), "green": (0, 1), "blue": (1, 0)}


def multilabel_image(path: Path, labels: Sequence[str], size: int = 24, seed: int = 0) -> None:
    """A grey noisy image with one coloured quadrant per label."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = rng.integers(90, 130, size=(size, size, 3), dtype=np.uint8)
    half = size // 2
    for name in labels:
        y, x = _QUADRANT[name]
        img[y * half : (y + 1) * half, x * half : (x + 1) * half] = COLOURS[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=92)


def write_multilabel_manifest(root: Path, n: int = 60, val_every: int = 5, size: int = 24) -> Path:
    """``root/labels.csv`` (path,labels,split) over ``n`` images with 1-3 colour labels each."""
    rng = random.Random(0)
    names = list(COLOURS)
    lines = ["path,labels,split"]
    for i in range(n):
        labels = sorted(rng.sample(names, rng.randint(1, 3)))
        rel = f"images/{i:03d}.jpg"
        multilabel_image(root / rel, labels, size, seed=i)
        split = "val" if i % val_every == 0 else "train"
        lines.append(f"{rel},{' '.join(labels)},{split}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "labels.csv"


def write_label_manifest(root: Path, counts: dict[str, int], size: int = 24) -> Path:
    """``root/data.csv`` (path,label) with ``counts[class]`` images per class (no split column)."""
    import numpy as np
    from PIL import Image

    lines = ["path,label"]
    for ci, (name, count) in enumerate(counts.items()):
        for i in range(count):
            rng = np.random.default_rng(ci * 1000 + i)
            img = rng.integers(0, 50, size=(size, size, 3), dtype=np.uint8)
            img[..., ci % 3] += 180
            rel = Path("files") / f"{name}_{i}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / rel, quality=92)
            lines.append(f"{rel.as_posix()},{name}")
    (root / "data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "data.csv"
