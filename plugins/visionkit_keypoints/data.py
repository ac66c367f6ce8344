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

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionkit_core import DataInfo, UsageError
from visionkit_core.kit.demo import DemoTree, cache_root, demo_options, publish_tree
from visionkit_core.kit.instances import InstanceDataModule, InstanceReport, check_tree
from visionkit_keypoints.scenes import CATEGORY, KEYPOINT_NAMES, SKELETON, render_scene

DIRNAME = "stick-figures-v1"
SIZE = 64
COUNTS = {"train": 512, "val": 96}
VAL_SEED_OFFSET = 1_000_000  # val scenes never repeat a train scene


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
        return DataInfo(class_names=self.class_names(), extra=extra)


def check_data(
    root: Path, workers: int | None = None, progress: Callable[[int], Any] | None = None
) -> InstanceReport:
    """``visionkit data check DIR --task keypoints``: every bad annotation and image, named."""
    return check_tree(Path(root), "keypoints", workers, progress)


def coco_split(folder: Path, split: str, count: int, size: int, offset: int) -> dict[str, Any]:
    """Render ``count`` scenes into ``folder/split/``; their COCO keypoints document."""
    from PIL import Image

    (folder / split).mkdir(parents=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(count):
        image, figures, boxes = render_scene(offset + i, size)
        Image.fromarray(image).save(folder / split / f"{i:05d}.png")
        images.append({"id": i + 1, "file_name": f"{i:05d}.png", "width": size, "height": size})
        for points, (x0, y0, x1, y1) in zip(figures, boxes, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "keypoints": [round(float(v), 2) for v in points.reshape(-1)],
                    "num_keypoints": len(points),
                }
            )
    category = {
        "id": 1,
        "name": CATEGORY,
        "supercategory": CATEGORY,
        "keypoints": KEYPOINT_NAMES,
        "skeleton": [[a + 1, b + 1] for a, b in SKELETON],  # COCO's are 1-based
    }
    return {"images": images, "annotations": annotations, "categories": [category]}


def materialise_figures(tree: Path, counts: dict[str, int] | None = None, size: int = SIZE) -> Path:
    """Write the demo tree at ``tree`` unless a complete one is already there."""
    counts = counts or COUNTS

    def build(tmp: Path) -> dict[str, Any]:
        (tmp / "annotations").mkdir()
        for split, count in counts.items():
            doc = coco_split(tmp, split, count, size, VAL_SEED_OFFSET if split != "train" else 0)
            name = f"person_keypoints_{split}.json"
            (tmp / "annotations" / name).write_text(json.dumps(doc), encoding="utf-8")
        return {"source": "visionkit_keypoints.scenes", "size": size, "counts": counts}

    return publish_tree(tree, build, "stick figures dataset")


class StickFigures(DemoTree, KeypointDataModule):
    """The demo: 512 train / 96 val 64 px scenes of one or two stick figures with 7 named keypoints.

    Takes the ``coco-keypoints`` options with defaults for the demo; ``cache_dir`` overrides
    ``$VISIONKIT_CACHE_DIR``.
    """

    default_image_size = SIZE
    default_epochs = 5
    demo_classes = [CATEGORY]
    materialise = staticmethod(materialise_figures)

    def __init__(
        self,
        batch_size: int = 8,
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
