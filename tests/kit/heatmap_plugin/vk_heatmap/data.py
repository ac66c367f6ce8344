"""Rendered keypoint data: K coloured dots on noise; the keypoint names come from the data."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2.functional import resize

from visionkit_core import DataInfo, DataSpec
from visionkit_core.kit import PredictImages, SeededDataModule, SeededDataset

COLOURS = {"red": (230, 30, 30), "green": (30, 210, 60), "blue": (40, 70, 240), "yellow": (240, 230, 40)}


def render(index: int, size: int, seed: int, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``index``: a uint8 ``(3, size, size)`` image and its ``(K, 2)`` dot centres ``(x, y)``."""
    gen = torch.Generator().manual_seed(seed * 100_003 + index)
    image = torch.randint(70, 130, (3, size, size), generator=gen, dtype=torch.uint8)
    points = torch.randint(2, size - 2, (len(names), 2), generator=gen)
    for (x, y), name in zip(points.tolist(), names, strict=True):
        image[:, y - 1 : y + 2, x - 1 : x + 2] = torch.tensor(COLOURS[name], dtype=torch.uint8).view(3, 1, 1)
    return image, points.float()


class Dots(SeededDataset):
    def __init__(self, count: int, size: int, seed: int, names: Sequence[str]) -> None:
        super().__init__(range(count))
        self.size, self.seed, self.names = size, seed, list(names)

    def load(self, index: int) -> tuple[Any, ...]:
        image, points = render(index, self.size, self.seed, self.names)
        shift = int(torch.randint(-20, 21, ()))  # seeded by the sampler's (seed, epoch) draw
        return (image.int().add(shift).clamp(0, 255).to(torch.uint8), points)


def collate(items: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    images, points, skipped = zip(*items, strict=True)
    return torch.stack(images), torch.stack(points), [entry for entries in skipped for entry in entries]


class DotsData(SeededDataModule):
    collate = collate

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 16,
        image_size: int | None = None,
        seed: int = 0,
        num_workers: int | None = None,
        num_keypoints: int = 3,
        train_size: int = 64,
    ) -> None:
        super().__init__()
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.image_size, self.train_size = image_size or 32, train_size
        self.names = list(COLOURS)[:num_keypoints]

    def setup(self, stage: str | None = None) -> None:
        self.datasets = {
            "train": Dots(self.train_size, self.image_size, self.seed, self.names),
            "val": Dots(32, self.image_size, self.seed + 1, self.names),
        }

    def data_info(self) -> DataInfo:
        return DataInfo(extra={"keypoint_names": list(self.names)})

    def data_spec(self) -> DataSpec:
        return DataSpec(splits=("train", "val"), batch="tuple", image_key=0)

    def preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.image_size}

    @classmethod
    def predict_dataset(cls, files: list[Path], preprocessing: dict[str, Any]) -> PredictImages:
        size = int(preprocessing["image_size"])
        return PredictImages(files, size, functools.partial(resize, size=[size, size], antialias=True))
