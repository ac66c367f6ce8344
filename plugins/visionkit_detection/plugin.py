"""Hook implementations of the built-in visionkit_detection plugin.

Registers the ``detection`` task and the ``coco``, ``yolo`` and ``shapes`` (procedural demo)
datasets as ``"module:attr"`` strings, and claims ``--data`` folders in the COCO or YOLO layout
(or a YOLO ``data.yaml`` file). Nothing here imports torch: the claim makes ``stat`` calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl
from visionkit_core.kit.registration import Entry, datasets, tasks

if TYPE_CHECKING:
    from pathlib import Path

_DATA = "visionkit_detection.datamodule:DetectionDataModule"
_CHECK = "visionkit_detection.check:check_tree"

visionkit_register_tasks = tasks(
    Entry(
        "detection",
        "visionkit_detection.model:Detector",
        "object detection: torchvision detectors, or FCOS/RetinaNet/Faster R-CNN heads over timm",
    ),
)
visionkit_register_datasets = datasets(
    Entry(
        "coco",
        _DATA,
        "COCO detection: DIR/annotations/instances_{train,val}.json + images in DIR/{train,val}/",
        check=_CHECK,
    ),
    Entry(
        "yolo",
        _DATA,
        "YOLO detection: DIR/data.yaml (path, train, val, names), images/<split>, labels/<split>",
        check=_CHECK,
    ),
    Entry(
        "shapes",
        "visionkit_detection.demo:ShapesDataModule",
        "procedural shapes with boxes, cached in the COCO layout (detection demo, 3 classes)",
    ),
)


@hookimpl
def visionkit_claim_data(path: Path) -> str | None:
    """``coco`` for a folder with annotations/instances_train*.json, ``yolo`` for a data.yaml; else None."""
    from visionkit_detection.layouts import detect

    kind = detect(path)
    return f"visionkit:{kind}" if kind else None
