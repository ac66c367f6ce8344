"""Export of the keypoint model: refused (the task declares no export format, so `visionkit export`
refuses it before asking; this says why to anyone who asks the task directly)."""

from __future__ import annotations

from typing import Any

from visionkit_core import ExportSpec, UsageError


def export_spec(task: Any, image_size: int) -> ExportSpec:
    raise UsageError(
        "keypoints models cannot be exported yet: Keypoint R-CNN's two-stage postprocessing "
        "(proposals and detections after NMS) has data-dependent shapes; use `visionkit predict`"
    )
