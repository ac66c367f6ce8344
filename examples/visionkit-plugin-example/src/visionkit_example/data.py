"""``example:shapes``: synthetic shape images, written once as an ImageFolder tree and trained through it.

``prepare_data()`` draws circles, squares and triangles (random size, position and colours)
as 32x32 PNGs under ``$VISIONKIT_CACHE_DIR/example-shapes-v1/{train,val}/<class>/``. The tree
is built in a temporary folder and renamed into place, so an interrupted run never leaves
half of it behind. Loading, augmentation and uint8 batches come from visionkit's
``ImageFolderDataModule``, which this class extends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from visionkit_imagefolder.datamodule import ImageFolderDataModule

CLASS_NAMES = ["circle", "square", "triangle"]
DIRNAME = "example-shapes-v1"
MARKER = ".complete"
SIZE = 32

if TYPE_CHECKING:
    from numpy.random import Generator
    from PIL.Image import Image


def cache_root() -> Path:
    """``$VISIONKIT_CACHE_DIR``, else ``~/.cache/visionkit`` (where visionkit keeps its own datasets)."""
    return Path(os.environ.get("VISIONKIT_CACHE_DIR") or Path.home() / ".cache" / "visionkit").expanduser()


def draw(shape: str, rng: Generator) -> Image:
    """One RGB ``SIZE`` x ``SIZE`` image of ``shape`` on a random dark background."""
    from PIL import Image, ImageDraw

    r = rng.integers
    image = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in r(0, 90, 3)))
    pen = ImageDraw.Draw(image)
    half = int(r(6, 14))
    cx, cy = int(r(half, SIZE - half)), int(r(half, SIZE - half))
    fill = tuple(int(v) for v in r(140, 256, 3))
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    return image


def materialise(tree: Path, per_class: tuple[int, int] = (60, 20), seed: int = 0) -> Path:
    """Write the train/val tree at ``tree`` unless a complete one is already there."""
    if (tree / MARKER).is_file():
        return tree
    import numpy as np

    rng = np.random.default_rng(seed)
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tree.name}.tmp-", dir=tree.parent))
    try:
        for split, count in zip(("train", "val"), per_class, strict=True):
            for shape in CLASS_NAMES:
                folder = tmp / split / shape
                folder.mkdir(parents=True)
                for i in range(count):
                    draw(shape, rng).save(folder / f"{shape}_{i:03d}.png")
        (tmp / MARKER).write_text("ok\n", encoding="utf-8")
        try:
            os.replace(tmp, tree)
        except OSError:
            if not (tree / MARKER).is_file():  # another process won only if it finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


class ShapesDataModule(ImageFolderDataModule):
    """Three classes of synthetic shapes: 180 training and 60 validation images of 32 px.

    Accepts what visionkit passes (``batch_size``, ``image_size``, ``seed``,
    ``num_workers``) and ignores ``--data`` paths: the data is generated.
    """

    default_image_size = SIZE

    def __init__(
        self,
        batch_size: int = 32,
        image_size: int | None = None,
        seed: int = 42,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(
            root=cache_root() / DIRNAME,
            batch_size=batch_size,
            image_size=image_size,
            seed=seed,
            num_workers=num_workers,
            hflip=True,
            crop_scale_min=0.8,
            crop_pct=1.0,
        )

    def class_names(self) -> list[str]:
        """Known without touching the disk (visionkit asks before ``prepare_data``)."""
        return list(CLASS_NAMES)

    def prepare_data(self) -> None:
        """Generate the images once (Lightning calls this on one process per node)."""
        assert self.root is not None
        materialise(self.root)

    def setup(self, stage: str | None = None) -> None:
        assert self.root is not None
        materialise(self.root)  # no-op when complete; covers setup() outside a Trainer
        super().setup(stage)
