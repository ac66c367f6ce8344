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

from visionkit_core.kit.demo import DemoTree, publish_tree, split_seeds
from visionkit_segmentation.datamodule import SegmentationDataModule
from visionkit_segmentation.scenes import CLASS_NAMES, render_scene

DIRNAME = "scenes-v1"
SIZE = 64
COUNTS = {"train": 640, "val": 128}


def materialise_scenes(tree: Path, counts: dict[str, int] | None = None, size: int = SIZE) -> Path:
    """Write the scenes tree at ``tree`` unless a complete one is already there."""
    counts = counts or COUNTS

    def build(tmp: Path) -> dict[str, Any]:
        from PIL import Image

        for split, seeds in split_seeds(counts).items():
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
            for i, seed in enumerate(seeds):
                image, mask = render_scene(seed, size)
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
    demo_dirname = DIRNAME
    demo_defaults = {"scale_min": 0.6}
    materialise = staticmethod(materialise_scenes)
