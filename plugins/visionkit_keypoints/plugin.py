"""Hook implementations of the built-in visionkit_keypoints plugin.

Registers the ``keypoints`` task, the ``coco-keypoints`` / ``yolo-pose`` datasets (one datamodule
reads both) and ``stick-figures`` (the rendered demo), and claims a COCO keypoints or YOLO-pose
folder for runs of this task only (detection and instance segmentation claim COCO/YOLO folders
for their own runs). Nothing here imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl
from visionkit_core.kit.registration import Entry, coco_or_yolo, datasets, tasks

if TYPE_CHECKING:
    from pathlib import Path

TASK = "keypoints"
#: The dataset name of each layout one datamodule reads (and one function checks).
LAYOUTS = {"coco": "coco-keypoints", "yolo": "yolo-pose"}
_DATA = "visionkit_keypoints.data:KeypointDataModule"
_CHECK = "visionkit_keypoints.data:check_data"

visionkit_register_tasks = tasks(
    Entry(
        TASK,
        "visionkit_keypoints.model:KeypointTask",
        "keypoints (pose): torchvision Keypoint R-CNN, or its heads over any feature backbone",
    ),
)
visionkit_register_datasets = datasets(
    Entry(
        LAYOUTS["coco"],
        _DATA,
        "COCO keypoints: DIR/annotations/person_keypoints_{train,val}.json + images",
        check=_CHECK,
    ),
    Entry(
        LAYOUTS["yolo"],
        _DATA,
        "YOLO-pose: DIR/data.yaml (kpt_shape, flip_idx) + images/<split>, labels/<split>/*.txt",
        check=_CHECK,
    ),
    Entry(
        "stick-figures",
        "visionkit_keypoints.data:StickFigures",
        "rendered stick figures with 7 named keypoints in the COCO layout (keypoints demo)",
    ),
)


@hookimpl(tryfirst=True)
def visionkit_claim_data(path: Path, task: str | None) -> str | None:
    """For runs of ``keypoints``: ``coco-keypoints`` for a folder with
    annotations/person_keypoints_train*.json, ``yolo-pose`` for a YOLO data.yaml. Without a task
    (``data check DIR``): that COCO folder, or a data.yaml declaring ``kpt_shape``. Other tasks' runs
    are left alone."""
    if task is not None and task.rpartition(":")[2] != TASK:
        return None
    found = coco_or_yolo(path, "person_keypoints")  # stat calls only; the datamodule reads the files
    if found is None:
        return None
    kind, file = found
    if kind == "yolo" and task is None:
        try:
            if "kpt_shape" not in file.read_text(encoding="utf-8"):
                return None
        except (OSError, UnicodeDecodeError):
            return None
    return f"visionkit:{LAYOUTS[kind]}"
