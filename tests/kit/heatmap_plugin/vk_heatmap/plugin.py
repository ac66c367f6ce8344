"""Hook implementations of the keypoint plugin (public API and kit only, like a PyPI package)."""

from __future__ import annotations

from typing import Any

from visionkit_core import hookimpl


@hookimpl
def visionkit_register_tasks(registry: Any) -> None:
    registry.add("heatmap", "vk_heatmap.task:HeatmapKeypoints", description="heatmap keypoints")


@hookimpl
def visionkit_register_datasets(registry: Any) -> None:
    registry.add("dots", "vk_heatmap.data:DotsData", description="coloured dots on noise")
