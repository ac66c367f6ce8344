"""The ``coco-keypoints`` and ``yolo-pose`` datasets and the ``stick-figures`` demo, on the kit.

Reading, per-annotation checks (keypoint count against the category, visibility flags 0/1/2,
unknown categories, missing images), joint transforms (a horizontal flip swaps left and right
keypoints: YOLO's ``flip_idx``, else from the names) and evaluation sharding are the kit's
(:mod:`visionkit_core.kit.instances`, :mod:`visionkit_core.kit.keypoints`); this module says that
the data is keypoints and hands the task their names and skeleton. The demo is rendered once as a
real COCO keypoints tree under ``$VISIONKIT_CACHE_DIR/stick-figures-v1/``
(``annotations/person_keypoints_{train,val}.json``, PNG images in ``train/`` and ``val/``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionkit_core import DataInfo, UsageError
from visionkit_core.kit.demo import DemoTree, coco_demo
from visionkit_core.kit.instances import InstanceDataModule, InstanceReport, check_tree
from visionkit_keypoints.scenes import CATEGORY, KEYPOINT_NAMES, SKELETON, render_scene

DIRNAME = "stick-figures-v1"
SIZE = 64
COUNTS = {"train": 512, "val": 96}
CATEGORY_DOC = {
    "id": 1,
    "name": CATEGORY,
    "supercategory": CATEGORY,
    "keypoints": KEYPOINT_NAMES,
    "skeleton": [[a + 1, b + 1] for a, b in SKELETON],  # COCO's are 1-based
}


class KeypointDataModule(InstanceDataModule):
    """Images with keypoint instances: COCO keypoints (``annotations/person_keypoints_*.json``, any
    category whose ``keypoints`` names them, with its ``skeleton``) or YOLO-pose (``data.yaml`` with
    ``kpt_shape`` and ``flip_idx``; ``class cx cy w h x y [v] ...`` normalised rows).

    Batches are ``(images, targets)`` lists: uint8 ``(3, S, S)`` letterboxed images and ``{"boxes",
    "labels", "iscrowd", "keypoints" (N, K, 2) pixels, "visibility" (N, K) 0/1/2, "image_id"}``.
    Images with an unusable annotation are left out and counted; unreadable ones are replaced and
    counted; ``--on-bad-image error`` lists every problem before training starts.
    """

    need = "keypoints"

    def data_info(self) -> DataInfo:
        """Class names, and the keypoint names and skeleton (0-based edges) the task records."""
        layout = self.layout()
        if not layout.keypoint_names:
            raise UsageError(f"{str(layout.root)!r}: the data names no keypoints")
        extra = {
            "keypoint_names": list(layout.keypoint_names),
            "skeleton": [list(e) for e in layout.skeleton],
        }
        return DataInfo(class_names=self.class_names(), extra=extra, train_size=self.train_size())


def check_data(
    root: Path, workers: int | None = None, progress: Callable[[int], Any] | None = None
) -> InstanceReport:
    """``visionkit data check DIR --task keypoints``: every bad annotation and image, named."""
    return check_tree(Path(root), "keypoints", workers, progress)


def render(seed: int, size: int) -> tuple[Any, list[dict[str, Any]]]:
    """One scene and its COCO keypoint annotations."""
    image, figures, boxes = render_scene(seed, size)
    found = [
        {
            "category_id": 1,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0),
            "keypoints": [round(float(v), 2) for v in points.reshape(-1)],
            "num_keypoints": len(points),
        }
        for points, (x0, y0, x1, y1) in zip(figures, boxes, strict=True)
    ]
    return image, found


def materialise_figures(tree: Path, counts: dict[str, int] | None = None, size: int = SIZE) -> Path:
    """Write the demo tree at ``tree`` unless a complete one is already there."""
    source = "visionkit_keypoints.scenes"
    return coco_demo(tree, render, [CATEGORY_DOC], counts or COUNTS, size, source, prefix="person_keypoints")


class StickFigures(DemoTree, KeypointDataModule):
    """The demo: 512 train / 96 val 64 px scenes of one or two stick figures with 7 named keypoints.

    Takes the ``coco-keypoints`` options with defaults for the demo; ``cache_dir`` overrides
    ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = SIZE
    default_epochs = 3
    demo_classes = [CATEGORY]
    demo_dirname = DIRNAME
    demo_defaults = {"batch_size": 8, "scale_min": 0.8, "scale_max": 1.2}
    materialise = staticmethod(materialise_figures)
