"""``example:shapes``: synthetic shape images, written once as a folder tree and trained through it.

``prepare_data()`` draws circles, squares and triangles (random size, position and colours)
as 32x32 PNGs under ``$VISIONKIT_CACHE_DIR/example-shapes-v1/{train,val}/<class>/`` with the
kit's :func:`~visionkit_core.kit.demo.publish_tree` (an interrupted run never leaves half a
tree). Loading, seeded augmentation, DDP sharding, bad-file skipping and uint8 batches come
from the kit's data base (:class:`~visionkit_core.kit.data.SeededDataModule`): this module
holds only what is its own. Batches are ``(images, truth)``, ``truth`` the contract's
:class:`~visionkit_core.plugin.contract.Sample` ``{"label": (N,) int64}`` that the built-in
classification task reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from visionkit_core import DataInfo, DataSpec
from visionkit_core.kit.data import PredictImages, SeededDataModule, SeededDataset, decode_image
from visionkit_core.kit.demo import DemoTree, cache_root, publish_tree
from visionkit_core.kit.skips import DECODE_ERRORS, UnusableSample, error_text
from visionkit_core.plugin.contract import Sample

CLASS_NAMES = ["circle", "square", "triangle"]
DIRNAME = "example-shapes-v1"
SIZE = 32

if TYPE_CHECKING:
    from numpy.random import Generator
    from PIL.Image import Image


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

    def build(tmp: Path) -> dict[str, Any]:
        import numpy as np

        rng = np.random.default_rng(seed)
        for split, count in zip(("train", "val"), per_class, strict=True):
            for shape in CLASS_NAMES:
                (tmp / split / shape).mkdir(parents=True)
                for i in range(count):
                    draw(shape, rng).save(tmp / split / shape / f"{shape}_{i:03d}.png")
        return {"source": "visionkit_example.data", "per_class": list(per_class), "seed": seed}

    return publish_tree(tree, build, "example shapes")


class ShapeFiles(SeededDataset):
    """``(path, label)`` samples as ``(image, {"label": ...})``; the kit seeds each one and skips
    unreadable files."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Any) -> None:
        super().__init__(samples)
        self.targets = [label for _, label in self.samples]  # for --sampler balanced
        self.transform = transform

    def load(self, index: int) -> tuple[Tensor, Sample]:
        path, label = self.samples[index]
        try:
            return self.transform(decode_image(path)), {"label": torch.tensor(label)}
        except DECODE_ERRORS as err:
            raise UnusableSample(path, error_text(err)) from None


def collate(items: Sequence[tuple[Any, ...]]) -> tuple[Tensor, Sample, list[Any]]:
    """``(uint8 images, {"label": labels}, skipped)``: the kit records and strips ``skipped``."""
    images = torch.stack([it[0] for it in items])
    truth: Sample = {"label": torch.stack([it[1]["label"] for it in items])}
    return images, truth, [s for it in items for s in it[2]]


class ShapesDataModule(DemoTree, SeededDataModule):
    """Three classes of synthetic shapes: 180 training and 60 validation images of 32 px.

    Accepts what visionkit passes (``batch_size``, ``image_size``, ``seed``, ``num_workers``,
    ``sampler``) and ignores ``--data`` paths: the data is generated.
    """

    default_image_size = SIZE
    demo_classes = CLASS_NAMES
    materialise = staticmethod(materialise)
    collate = staticmethod(collate)

    def __init__(
        self,
        batch_size: int = 32,
        image_size: int | None = None,
        seed: int = 42,
        num_workers: int | None = None,
        sampler: str = "default",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = cache_root() / DIRNAME
        self.batch_size, self.seed, self.sampler = batch_size, seed, sampler
        self.num_workers, self.image_size = num_workers, int(image_size or SIZE)

    def layout(self) -> dict[str, list[tuple[str, int]]]:
        """``(path, label)`` per split (the kit's ``DemoTree`` writes the tree first)."""
        assert self.root is not None
        files = {
            split: [(p, i) for i, c in enumerate(CLASS_NAMES) for p in (self.root / split / c).glob("*.png")]
            for split in ("train", "val")
        }
        return {split: sorted((str(p), i) for p, i in pairs) for split, pairs in files.items()}

    def data_info(self) -> DataInfo:
        return DataInfo(class_names=list(CLASS_NAMES))

    def data_spec(self) -> DataSpec:
        return DataSpec(splits=("train", "val"), batch="tuple", image_key=0)

    def preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "crop_pct": 1.0}

    @classmethod
    def predict_dataset(cls, files: list[Path], preprocessing: dict[str, Any]) -> PredictImages:
        size = int(preprocessing.get("image_size") or SIZE)
        return PredictImages(files, size, v2.Resize((size, size), antialias=True))

    def setup(self, stage: str | None = None) -> None:
        splits, size = self.layout(), self.image_size
        crop = v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True)
        self.datasets["train"] = ShapeFiles(splits["train"], v2.Compose([crop, v2.RandomHorizontalFlip()]))
        self.datasets["val"] = ShapeFiles(splits["val"], v2.Resize((size, size), antialias=True))
