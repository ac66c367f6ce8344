"""The ``coco-instances`` and ``yolo-seg`` datasets and the ``instance-shapes`` demo, on the kit.

The reading, per-annotation checks, joint transforms and evaluation sharding are the kit's
(:mod:`visionkit_core.kit.instances`); this module says that the data is masks, and renders the
demo once as a real COCO tree under ``$VISIONKIT_CACHE_DIR/instance-shapes-v1/``: polygons in
``annotations/instances_{train,val}.json``, PNG images in ``train/`` and ``val/``, published
atomically, so the demo runs the real COCO path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionkit_core.kit.demo import DemoTree, cache_root, demo_options, publish_tree
from visionkit_core.kit.instances import InstanceDataModule, InstanceReport, check_tree
from visionkit_instance_segmentation.scenes import CLASS_NAMES, render_scene

DIRNAME = "instance-shapes-v1"
SIZE = 64
COUNTS = {"train": 640, "val": 96}
VAL_SEED_OFFSET = 1_000_000  # val scenes never repeat a train scene


class InstanceSegDataModule(InstanceDataModule):
    """Images with instance masks: COCO (``annotations/instances_*.json``, polygons or RLE, ``iscrowd``)
    or YOLO-seg (``data.yaml``; ``class x1 y1 x2 y2 ...`` normalised polygons).

    Batches are ``(images, targets)`` lists: uint8 ``(3, S, S)`` letterboxed images and
    ``{"boxes", "labels", "iscrowd", "masks" (N, S, S) uint8, "image_id"}``. Images with an
    unusable annotation are left out and counted; unreadable ones are replaced and counted;
    ``--on-bad-image error`` lists every problem before training starts.
    """

    need = "segm"


def check_data(
    root: Path, workers: int | None = None, progress: Callable[[int], Any] | None = None
) -> InstanceReport:
    """``visionkit data check DIR --task instance-segmentation``: every bad annotation and image."""
    return check_tree(Path(root), "segm", workers, progress)


def coco_split(folder: Path, split: str, count: int, size: int, offset: int) -> dict[str, Any]:
    """Render ``count`` scenes into ``folder/split/``; their COCO instances document (polygons)."""
    from PIL import Image

    (folder / split).mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        image, polygons, labels = render_scene(offset + i, size)
        Image.fromarray(image).save(folder / split / f"{i:05d}.png")
        images.append({"id": i + 1, "file_name": f"{i:05d}.png", "width": size, "height": size})
        for poly, label in zip(polygons, labels, strict=True):
            xs, ys = poly[0::2], poly[1::2]
            x0, y0 = min(xs), min(ys)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "iscrowd": 0,
                    "segmentation": [poly],
                    "bbox": [x0, y0, max(xs) - x0, max(ys) - y0],
                    "area": 0.5 * abs(sum(xs[k - 1] * ys[k] - xs[k] * ys[k - 1] for k in range(len(xs)))),
                }
            )
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def materialise_shapes(tree: Path, counts: dict[str, int] | None = None, size: int = SIZE) -> Path:
    """Write the demo tree at ``tree`` unless a complete one is already there."""
    counts = counts or COUNTS

    def build(tmp: Path) -> dict[str, Any]:
        (tmp / "annotations").mkdir()
        for split, count in counts.items():
            doc = coco_split(tmp, split, count, size, VAL_SEED_OFFSET if split != "train" else 0)
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc), encoding="utf-8")
        return {"source": "visionkit_instance_segmentation.scenes", "size": size, "counts": counts}

    return publish_tree(tree, build, "instance shapes dataset")


class ShapesDataModule(DemoTree, InstanceSegDataModule):
    """The demo: 640 train / 96 val 64 px scenes of circles, squares and triangles with polygon masks.

    Takes the ``coco-instances`` options with defaults for the demo; ``cache_dir`` overrides
    ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = SIZE
    default_epochs = 4
    demo_classes = CLASS_NAMES
    materialise = staticmethod(materialise_shapes)

    def __init__(
        self,
        batch_size: int = 32,
        image_size: int | None = None,
        seed: int = 42,
        num_workers: int | None = None,
        on_bad_image: str = "skip",
        scale_min: float = 0.8,
        scale_max: float = 1.2,
        hflip: bool = True,
        cache_dir: str | None = None,
        sampler: str = "default",
    ) -> None:
        super().__init__(root=cache_root(cache_dir) / DIRNAME, **demo_options(locals()))
