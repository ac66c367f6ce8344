"""Hook implementations of the built-in visionkit_keypoints plugin.

Registers the ``keypoints`` task, the ``coco-keypoints`` / ``yolo-pose`` datasets (one datamodule
reads both) and ``stick-figures`` (the rendered demo), and claims a COCO keypoints or YOLO-pose
folder for runs of this task only (detection and instance segmentation claim COCO/YOLO folders
for their own runs). Nothing here imports torch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    from visionkit_core import Registrar

TASK = "keypoints"
_DATA = "visionkit_keypoints.data:KeypointDataModule"
_CHECK = "visionkit_keypoints.data:check_data"


@hookimpl
def visionkit_register_tasks(registry: Registrar) -> None:
    """Register the ``keypoints`` task."""
    registry.add(
        TASK,
        "visionkit_keypoints.model:KeypointTask",
        description="keypoints (pose): torchvision Keypoint R-CNN, or its heads over any feature backbone",
    )


@hookimpl
def visionkit_register_datasets(registry: Registrar) -> None:
    """Register ``coco-keypoints``, ``yolo-pose`` and the ``stick-figures`` demo."""
    registry.add(
        "coco-keypoints",
        _DATA,
        description="COCO keypoints: DIR/annotations/person_keypoints_{train,val}.json + images",
        check=_CHECK,
    )
    registry.add(
        "yolo-pose",
        _DATA,
        description="YOLO-pose: DIR/data.yaml (kpt_shape, flip_idx) + images/<split>, labels/<split>/*.txt",
        check=_CHECK,
    )
    registry.add(
        "stick-figures",
        "visionkit_keypoints.data:StickFigures",
        description="rendered stick figures with 7 named keypoints in the COCO layout (keypoints demo)",
    )


@hookimpl(tryfirst=True)
def visionkit_claim_data(path: Path, task: str | None) -> str | None:
    """For runs of ``keypoints``: ``coco-keypoints`` for a folder with
    annotations/person_keypoints_train*.json, ``yolo-pose`` for a YOLO data.yaml. Without a task
    (``data check DIR``): that COCO folder, or a data.yaml declaring ``kpt_shape``. Other tasks' runs
    are left alone."""
    if task is not None and task.rpartition(":")[2] != TASK:
        return None
    try:  # stat calls only (no torch); the datamodule reads and checks the files
        folder = path / "annotations"
        if (
            path.is_dir()
            and folder.is_dir()
            and any(f.startswith("person_keypoints_train") for f in os.listdir(folder))
        ):
            return "visionkit:coco-keypoints"
        yaml_file = path if path.suffix.lower() in (".yaml", ".yml") else path / "data.yaml"
        if yaml_file.is_file() and (task is not None or "kpt_shape" in yaml_file.read_text(encoding="utf-8")):
            return "visionkit:yolo-pose"
    except (OSError, UnicodeDecodeError):
        return None
    return None
