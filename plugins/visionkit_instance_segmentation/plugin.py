"""Hook implementations of the built-in visionkit_instance_segmentation plugin.

Registers the ``instance-segmentation`` task, the ``coco-instances`` / ``yolo-seg`` datasets (one
datamodule reads both) and ``instance-shapes`` (the rendered demo), and claims a COCO or YOLO
folder for runs of this task only (detection claims the same layouts for its own runs). Nothing
here imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl
from visionkit_core.kit.registration import Entry, coco_or_yolo, datasets, tasks

if TYPE_CHECKING:
    from pathlib import Path

TASK = "instance-segmentation"
#: The dataset name of each layout one datamodule reads (and one function checks).
LAYOUTS = {"coco": "coco-instances", "yolo": "yolo-seg"}
_DATA = "visionkit_instance_segmentation.data:InstanceSegDataModule"
_CHECK = "visionkit_instance_segmentation.data:check_data"

visionkit_register_tasks = tasks(
    Entry(
        TASK,
        "visionkit_instance_segmentation.model:InstanceSegmenter",
        "instance segmentation: torchvision Mask R-CNN, or its heads over any feature backbone",
    ),
)
visionkit_register_datasets = datasets(
    Entry(
        LAYOUTS["coco"],
        _DATA,
        "COCO instances (polygon/RLE masks): DIR/annotations/instances_{train,val}.json + images",
        check=_CHECK,
    ),
    Entry(
        LAYOUTS["yolo"],
        _DATA,
        "YOLO-seg: DIR/data.yaml + images/<split>, labels/<split>/*.txt ('class x1 y1 x2 y2 ..')",
        check=_CHECK,
    ),
    Entry(
        "instance-shapes",
        "visionkit_instance_segmentation.data:ShapesDataModule",
        "rendered shapes with polygon masks in the COCO layout (instance segmentation demo)",
    ),
)


@hookimpl(tryfirst=True)
def visionkit_claim_data(path: Path, task: str | None) -> str | None:
    """``coco-instances`` / ``yolo-seg`` for a COCO or YOLO folder, when the run's task is ours."""
    if task is None or task.rpartition(":")[2] != TASK:
        return None
    found = coco_or_yolo(path, "instances")
    return f"visionkit:{LAYOUTS[found[0]]}" if found else None
