"""Random images whose target is their mean brightness, as dict batches ``{"image", "target"}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from visionkit_core import BadSample, DataInfo, DataSpec


def make_images(n: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    level = torch.randint(0, 256, (n, 1, 1, 1), generator=gen)
    noise = torch.randint(-20, 21, (n, 3, size, size), generator=gen)
    return (level + noise).clamp(0, 255).to(torch.uint8)


class Samples(Dataset[dict[str, Any]]):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.images[i]
        return {"image": image, "target": image.float().mean() / 255.0}


class BrightnessData(L.LightningDataModule):
    def __init__(
        self, root: str | None = None, batch_size: int = 16, image_size: int | None = None, seed: int = 0
    ):
        super().__init__()
        self.batch_size = batch_size
        self.image_size = image_size or 16
        self.seed = seed

    def data_info(self) -> DataInfo:
        return DataInfo(extra={"target_range": [0.0, 1.0]})

    def data_spec(self) -> DataSpec:
        return DataSpec(splits=("train", "val"), batch="dict", image_key="image")

    def preprocessing(self) -> dict[str, Any]:
        return {"image_size": self.image_size}

    def bad_samples(self) -> list[BadSample]:
        return []

    def setup(self, stage: str | None = None) -> None:
        self.train = Samples(make_images(64, self.image_size, self.seed))
        self.val = Samples(make_images(32, self.image_size, self.seed + 1))

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val, batch_size=self.batch_size)

    @classmethod
    def predict_dataset(cls, files: list[Path], preprocessing: dict[str, Any]) -> Dataset[dict[str, Any]]:
        size = int(preprocessing["image_size"])

        class Files(Dataset[dict[str, Any]]):
            def __len__(self) -> int:
                return len(files)

            def __getitem__(self, i: int) -> dict[str, Any]:
                try:
                    with Image.open(files[i]) as im:
                        rgb = im.convert("RGB")
                        h, w = rgb.height, rgb.width
                        array = np.asarray(rgb.resize((size, size)), dtype=np.uint8)
                    image = torch.from_numpy(array.copy()).permute(2, 0, 1)
                    return {"image": image, "ok": True, "size": torch.tensor([h, w])}
                except OSError:
                    return {
                        "image": torch.zeros(3, size, size, dtype=torch.uint8),
                        "ok": False,
                        "size": torch.tensor([0, 0]),
                    }

        return Files()
