"""Hook implementations of the probe plugin (written from the public API only, like a PyPI package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit_core import hookimpl


@hookimpl
def visionkit_register_tasks(registry: Any) -> None:
    registry.add("brightness", "visionkit_probe.task:BrightnessRegressor", description="mean brightness")


@hookimpl
def visionkit_register_datasets(registry: Any) -> None:
    registry.add("brightness", "visionkit_probe.data:BrightnessData", description="random images")


@hookimpl
def visionkit_claim_data(path: Path) -> str | None:
    return "probe:brightness" if (path / "BRIGHTNESS").is_file() else None


@hookimpl
def visionkit_register_callbacks(registry: Any) -> None:
    registry.add("fail-on-rank", "visionkit_probe.failing:FailOnRank", description="raises on one rank")
