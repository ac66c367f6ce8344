"""The ``shapes`` dataset: the detection demo, rendered once as a real COCO-layout tree.

``prepare_data()`` renders :mod:`visionkit_detection.scenes` into
``$VISIONKIT_CACHE_DIR/shapes-det-v1/`` as ``annotations/instances_{train,val}.json`` with PNG
images in ``train/`` and ``val/``, atomically: the tree is written in a temporary folder next
to it and renamed into place, so a killed or concurrent first run never leaves half a tree.
Training then runs the real COCO path (:class:`DetectionDataModule`) over those files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionkit_core.kit.demo import DemoTree, cache_root, demo_options, publish_tree
from visionkit_detection.datamodule import DetectionDataModule
from visionkit_detection.scenes import CLASS_NAMES, render_scene

DIRNAME = "shapes-det-v1"
SIZE = 96
COUNTS = {"train": 512, "val": 128}
VAL_SEED_OFFSET = 1_000_000  # val scenes never repeat a train scene


def coco_split(folder: Path, split: str, count: int, size: int, offset: int) -> dict[str, Any]:
    """Render ``count`` scenes into ``folder/split/`` and return their COCO instances document."""
    from PIL import Image

    (folder / split).mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        image, boxes, labels = render_scene(offset + i, size)
        name = f"{i:05d}.png"
        Image.fromarray(image).save(folder / split / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for box, label in zip(boxes, labels, strict=True):
            x0, y0, x1, y1 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def materialise_shapes(tree: Path, counts: dict[str, int] | None = None, size: int = SIZE) -> Path:
    """Write the shapes tree at ``tree`` unless a complete one is already there."""
    counts = counts or COUNTS

    def build(tmp: Path) -> dict[str, Any]:
        (tmp / "annotations").mkdir()
        for split, count in counts.items():
            offset = VAL_SEED_OFFSET if split != "train" else 0
            doc = coco_split(tmp, split, count, size, offset)
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc), encoding="utf-8")
        return {"source": "visionkit_detection.scenes", "size": size, "counts": counts}

    return publish_tree(tree, build, "shapes dataset")


class ShapesDataModule(DemoTree, DetectionDataModule):
    """The built-in demo: 512 train / 128 val 96 px scenes of circles, squares and triangles (COCO layout).

    Takes the ``coco`` options with defaults for the demo; ``cache_dir`` overrides
    ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = SIZE
    demo_classes = CLASS_NAMES
    materialise = staticmethod(materialise_shapes)

    def __init__(
        self,
        batch_size: int = 16,
        image_size: int | None = None,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        scale_min: float = 0.5,
        scale_max: float = 1.5,
        hflip: bool = True,
        cache_dir: str | None = None,
        sampler: str = "default",
        mosaic: float = 1.0,
        close_mosaic: int = 10,
        translate: float = 0.1,
        hsv_h: float = 0.015,
        hsv_s: float = 0.7,
        hsv_v: float = 0.4,
        cache: str = "auto",
    ) -> None:
        super().__init__(root=cache_root(cache_dir) / DIRNAME, **demo_options(locals()))
