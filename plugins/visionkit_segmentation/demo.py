"""The ``scenes`` dataset: the segmentation demo, rendered once as a real masks-layout tree.

``prepare_data()`` renders :mod:`visionkit_segmentation.scenes` into
``$VISIONKIT_CACHE_DIR/scenes-v1/{train,val}/{images,masks}/`` plus ``classes.txt``,
atomically: the tree is written in a temporary folder next to it and renamed into place,
so a killed or concurrent first run never leaves half a tree. Training then runs the real
:class:`SegmentationDataModule` path over those files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit_core.kit.demo import DemoTree, cache_root, demo_options, publish_tree
from visionkit_segmentation.datamodule import SegmentationDataModule
from visionkit_segmentation.scenes import CLASS_NAMES, render_scene

DIRNAME = "scenes-v1"
SIZE = 64
COUNTS = {"train": 640, "val": 128}
VAL_SEED_OFFSET = 1_000_000  # val scenes never repeat a train scene


def materialise_scenes(tree: Path, counts: dict[str, int] | None = None, size: int = SIZE) -> Path:
    """Write the scenes tree at ``tree`` unless a complete one is already there."""
    counts = counts or COUNTS

    def build(tmp: Path) -> dict[str, Any]:
        from PIL import Image

        for split, count in counts.items():
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
            offset = VAL_SEED_OFFSET if split != "train" else 0
            for i in range(count):
                image, mask = render_scene(offset + i, size)
                Image.fromarray(image).save(tmp / split / "images" / f"{i:04d}.png")
                Image.fromarray(mask, mode="L").save(tmp / split / "masks" / f"{i:04d}.png")
        (tmp / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
        return {"source": "visionkit_segmentation.scenes", "size": size, "counts": counts}

    return publish_tree(tree, build, "scenes dataset")


class ScenesDataModule(DemoTree, SegmentationDataModule):
    """The built-in demo: 640 train / 128 val 64 px scenes of circles, squares and triangles.

    Takes the ``segmasks`` options with defaults for the demo; ``cache_dir`` overrides
    ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = SIZE
    demo_classes = CLASS_NAMES
    materialise = staticmethod(materialise_scenes)

    def __init__(
        self,
        batch_size: int = 16,
        image_size: int | None = None,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        scale_min: float = 0.6,
        hflip: bool = True,
        cache_dir: str | None = None,
        sampler: str = "default",
        mosaic: float = 0.0,
        close_mosaic: int = 10,
        hsv_h: float = 0.0,
        hsv_s: float = 0.0,
        hsv_v: float = 0.0,
        cache: str = "auto",
    ) -> None:
        super().__init__(root=cache_root(cache_dir) / DIRNAME, **demo_options(locals()))
