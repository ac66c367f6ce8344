"""Hook implementations of the built-in visionkit_instance_segmentation plugin.

Registers the ``instance-segmentation`` task, the ``coco-instances`` / ``yolo-seg`` datasets (one
datamodule reads both) and ``instance-shapes`` (the rendered demo), and claims a COCO or YOLO
folder for runs of this task only (detection claims the same layouts for its own runs). Nothing
here imports torch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    from visionkit_core import Registrar

TASK = "instance-segmentation"
_DATA = "visionkit_instance_segmentation.data:InstanceSegDataModule"
_CHECK = "visionkit_instance_segmentation.data:check_data"


@hookimpl
def visionkit_register_tasks(registry: Registrar) -> None:
    """Register the ``instance-segmentation`` task."""
    registry.add(
        TASK,
        "visionkit_instance_segmentation.model:InstanceSegmenter",
        description="instance segmentation: torchvision Mask R-CNN, or its heads over any feature backbone",
    )


@hookimpl
def visionkit_register_datasets(registry: Registrar) -> None:
    """Register ``coco-instances``, ``yolo-seg`` and the ``instance-shapes`` demo."""
    registry.add(
        "coco-instances",
        _DATA,
        description="COCO instances (polygon/RLE masks): DIR/annotations/instances_{train,val}.json + images",
        check=_CHECK,
    )
    registry.add(
        "yolo-seg",
        _DATA,
        description="YOLO-seg: DIR/data.yaml + images/<split>, labels/<split>/*.txt ('class x1 y1 x2 y2 ..')",
        check=_CHECK,
    )
    registry.add(
        "instance-shapes",
        "visionkit_instance_segmentation.data:ShapesDataModule",
        description="rendered shapes with polygon masks in the COCO layout (instance segmentation demo)",
    )


@hookimpl(tryfirst=True)
def visionkit_claim_data(path: Path, task: str | None) -> str | None:
    """``coco-instances`` / ``yolo-seg`` for a COCO or YOLO folder, when the run's task is ours."""
    if task is None or task.rpartition(":")[2] != TASK:
        return None
    try:
        folder = path / "annotations"
        if (
            path.is_dir()
            and folder.is_dir()
            and any(f.startswith("instances_train") for f in os.listdir(folder))
        ):
            return "visionkit:coco-instances"
        if path.suffix.lower() in (".yaml", ".yml") or (path / "data.yaml").is_file():
            return "visionkit:yolo-seg"
    except OSError:
        return None
    return None
