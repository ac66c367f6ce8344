"""The ``digit-sets`` dataset: the multi-label demo, one to three handwritten digits per image.

Built from scikit-learn's 1,797 8x8 digits (no download): each 16x16 image holds 1-3 digits
in distinct quadrants, and its labels are the set of digits shown. ``prepare_data()``
writes the images and a CSV manifest (``path,labels,split``; a fixed 80/20 split) once under
``$VISIONKIT_CACHE_DIR/digit-sets-v1/``, atomically, so training runs the real manifest path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit_core.kit.demo import cache_root, demo_options, is_complete, publish_tree
from visionkit_imagefolder.manifest import Manifest
from visionkit_imagefolder.manifest_datamodule import ManifestDataModule

DIRNAME = "digit-sets-v1"
NUM_IMAGES = 1500
VAL_FRACTION = 0.2
SEED = 0


def materialise_digit_sets(tree: Path) -> Path:
    """Write the digit-sets images and ``manifest.csv`` at ``tree`` unless complete already."""

    def build(tmp: Path) -> dict[str, Any]:
        import numpy as np
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        rng = np.random.default_rng(SEED)
        (tmp / "images").mkdir()
        lines = ["path,labels,split"]
        for i in range(NUM_IMAGES):
            canvas = np.zeros((16, 16), dtype=np.uint8)
            k = int(rng.integers(1, 4))
            quadrants = rng.choice(4, size=k, replace=False)
            chosen = rng.choice(len(pixels), size=k, replace=False)
            labels = set()
            for q, j in zip(quadrants.tolist(), chosen.tolist(), strict=True):
                y, x = divmod(q, 2)
                canvas[y * 8 : y * 8 + 8, x * 8 : x * 8 + 8] = pixels[j]
                labels.add(str(digits.target[j]))
            name = f"images/{i:04d}.png"
            Image.fromarray(canvas).save(tmp / name)
            split = "val" if i >= NUM_IMAGES * (1 - VAL_FRACTION) else "train"
            lines.append(f"{name},{' '.join(sorted(labels))},{split}")
        (tmp / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return {"source": "sklearn.datasets.load_digits", "images": NUM_IMAGES, "seed": SEED}

    return publish_tree(tree, build, "digit-sets dataset")


class DigitSetsDataModule(ManifestDataModule):
    """The multi-label demo: 1,200 train / 300 val 16x16 images of 1-3 digits, labelled by their set.

    Takes the manifest options, with defaults for tiny digit images upscaled to 32 px: no
    flips (a flipped digit is another glyph), a mild crop, no evaluation crop.
    ``cache_dir`` overrides ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = 32
    default_epochs = 3  # without --epochs: a CPU-friendly demo, as digits

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
        self.tree = cache_root(cache_dir) / DIRNAME
        super().__init__(root=self.tree / "manifest.csv", **demo_options(locals()))

    def prepare_data(self) -> None:
        """Materialise the images and manifest once (Lightning calls this on one process per node)."""
        materialise_digit_sets(self.tree)

    def manifest(self) -> Manifest:
        if not is_complete(self.tree):  # read before prepare_data(): data_info() comes first
            materialise_digit_sets(self.tree)
        return super().manifest()
