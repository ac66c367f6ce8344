"""The ``shapes`` dataset: the detection demo, rendered once as a real COCO-layout tree.

``prepare_data()`` renders :mod:`visionkit_detection.scenes` into
``$VISIONKIT_CACHE_DIR/shapes-det-v1/`` as ``annotations/instances_{train,val}.json`` with PNG
images in ``train/`` and ``val/``, atomically: the tree is written in a temporary folder next
to it and renamed into place, so a killed or concurrent first run never leaves half a tree.
Training then runs the real COCO path (:class:`DetectionDataModule`) over those files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit_core.kit.demo import DemoTree, coco_demo
from visionkit_detection.datamodule import DetectionDataModule
from visionkit_detection.scenes import CLASS_NAMES, render_scene

DIRNAME = "shapes-det-v1"
SIZE = 96
COUNTS = {"train": 512, "val": 128}
CATEGORIES = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]


def render(seed: int, size: int) -> tuple[Any, list[dict[str, Any]]]:
    """One scene and its COCO box annotations."""
    image, boxes, labels = render_scene(seed, size)
    found = [
        {"category_id": label + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
        for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True)
    ]
    return image, found


def materialise_shapes(tree: Path, counts: dict[str, int] | None = None, size: int = SIZE) -> Path:
    """Write the shapes tree at ``tree`` unless a complete one is already there."""
    return coco_demo(tree, render, CATEGORIES, counts or COUNTS, size, "visionkit_detection.scenes")


class ShapesDataModule(DemoTree, DetectionDataModule):
    """The built-in demo: 512 train / 128 val 96 px scenes of circles, squares and triangles (COCO layout).

    Takes the ``coco`` options with defaults for the demo; ``cache_dir`` overrides
    ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = SIZE
    demo_classes = CLASS_NAMES
    demo_dirname = DIRNAME
    demo_defaults = {"batch_size": 16}
    materialise = staticmethod(materialise_shapes)
