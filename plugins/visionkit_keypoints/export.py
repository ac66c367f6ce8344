"""Export of the keypoint model (see :func:`export_spec`)."""

from __future__ import annotations

from typing import Any

from visionkit_core import ExportSpec, UsageError


def export_spec(task: Any, image_size: int) -> ExportSpec:
    raise UsageError(
        "keypoints models cannot be exported yet: Keypoint R-CNN's two-stage postprocessing "
        "(proposals and detections after NMS) has data-dependent shapes; use `visionkit predict`"
    )
