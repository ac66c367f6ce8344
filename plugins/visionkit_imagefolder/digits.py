"""The ``digits`` dataset: scikit-learn's 1,797 handwritten digits as a cached ImageFolder tree.

The 8x8 images ship with scikit-learn (no download). ``prepare_data()`` writes them once as
grayscale PNGs under ``$VISIONKIT_CACHE_DIR/digits-v1/{train,val}/<digit>/`` (a fixed
stratified 80/20 split, independent of the run seed), atomically: the tree is built in a
temporary folder next to it and renamed into place, so a killed or concurrent writer never
leaves half a tree. Training then runs the real :class:`ImageFolderDataModule` path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit_core.kit.demo import DemoTree, cache_root, demo_options, publish_tree
from visionkit_imagefolder.datamodule import ImageFolderDataModule

DIGITS_DIRNAME = "digits-v1"
NUM_IMAGES = 1797
SPLIT_SEED = 0  # fixed: the demo's validation set must not move with --seed
CLASS_NAMES = [str(d) for d in range(10)]


def materialise_digits(tree: Path) -> Path:
    """Write the digits ImageFolder tree at ``tree`` unless a complete one is already there."""

    def build(tmp: Path) -> dict[str, Any]:
        import numpy as np
        from PIL import Image
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        train_idx, val_idx = train_test_split(
            np.arange(len(pixels)), test_size=0.2, stratify=digits.target, random_state=SPLIT_SEED
        )
        for split, indices in (("train", train_idx), ("val", val_idx)):
            for label in CLASS_NAMES:
                (tmp / split / label).mkdir(parents=True)
            for i in sorted(indices.tolist()):
                Image.fromarray(pixels[i]).save(tmp / split / str(digits.target[i]) / f"{i:04d}.png")
        return {"source": "sklearn.datasets.load_digits", "images": len(pixels), "split_seed": SPLIT_SEED}

    return publish_tree(tree, build, "digits dataset")


class DigitsDataModule(DemoTree, ImageFolderDataModule):
    """The built-in demo dataset: 10 classes of handwritten digits, 1,437 train / 360 val images.

    Takes the ImageFolder options, with defaults tuned for 8x8 digits upscaled to 32 px:
    no horizontal flips (a flipped digit is another glyph), a mild crop, no eval crop.
    ``cache_dir`` overrides ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = 32
    #: val/acc passes 0.97 at epoch 3 with the schedule compressed into 3 epochs (0.983 measured);
    #: at 2 epochs it reaches 0.953. ``--epochs`` overrides it.
    default_epochs = 3
    demo_classes = CLASS_NAMES
    materialise = staticmethod(materialise_digits)

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int | None = None,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        hflip: bool = False,
        crop_scale_min: float = 0.7,
        crop_pct: float = 1.0,
        pin_memory: bool | None = None,
        cache_dir: str | None = None,
        augment: str = "basic",
        sampler: str = "default",
    ) -> None:
        super().__init__(root=cache_root(cache_dir) / DIGITS_DIRNAME, **demo_options(locals()))

    def has_test_split(self) -> bool:
        return False
