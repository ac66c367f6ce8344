"""The ``coco-instances`` and ``yolo-seg`` datasets and the ``instance-shapes`` demo, on the kit.

The reading, per-annotation checks, joint transforms and evaluation sharding are the kit's
(:mod:`visionkit_core.kit.instances`); this module says that the data is masks, and renders the
demo once as a real COCO tree under ``$VISIONKIT_CACHE_DIR/instance-shapes-v1/``: polygons in
``annotations/instances_{train,val}.json``, PNG images in ``train/`` and ``val/``, published
atomically, so the demo runs the real COCO path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionkit_core.kit.demo import DemoTree, coco_demo
from visionkit_core.kit.instances import InstanceDataModule, InstanceReport, check_tree
from visionkit_instance_segmentation.scenes import CLASS_NAMES, render_scene

DIRNAME = "instance-shapes-v1"
SIZE = 64
COUNTS = {"train": 640, "val": 96}
CATEGORIES = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]


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


def render(seed: int, size: int) -> tuple[Any, list[dict[str, Any]]]:
    """One scene and its COCO instance annotations (polygons)."""
    image, polygons, labels = render_scene(seed, size)
    found = []
    for poly, label in zip(polygons, labels, strict=True):
        xs, ys = poly[0::2], poly[1::2]
        x0, y0 = min(xs), min(ys)
        found.append(
            {
                "category_id": label + 1,
                "segmentation": [poly],
                "bbox": [x0, y0, max(xs) - x0, max(ys) - y0],
                "area": 0.5 * abs(sum(xs[k - 1] * ys[k] - xs[k] * ys[k - 1] for k in range(len(xs)))),
            }
        )
    return image, found


def materialise_shapes(tree: Path, counts: dict[str, int] | None = None, size: int = SIZE) -> Path:
    """Write the demo tree at ``tree`` unless a complete one is already there."""
    source = "visionkit_instance_segmentation.scenes"
    return coco_demo(tree, render, CATEGORIES, counts or COUNTS, size, source)


class ShapesDataModule(DemoTree, InstanceSegDataModule):
    """The demo: 640 train / 96 val 64 px scenes of circles, squares and triangles with polygon masks.

    Takes the ``coco-instances`` options with defaults for the demo; ``cache_dir`` overrides
    ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = SIZE
    default_epochs = 2
    demo_classes = CLASS_NAMES
    demo_dirname = DIRNAME
    demo_defaults = {"batch_size": 32, "scale_min": 0.8, "scale_max": 1.2}
    materialise = staticmethod(materialise_shapes)
