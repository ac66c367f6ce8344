"""Hook implementations of the built-in visionkit_wandb_images plugin: the ``wandb-images`` callback."""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from visionkit_core import Registrar


@hookimpl
def visionkit_register_callbacks(registry: Registrar) -> None:
    """Register ``wandb-images`` (options: num_samples, every_n_epochs)."""
    registry.add(
        "wandb-images",
        "visionkit_wandb_images.callback:WandbImagesCallback",
        description="sample validation predictions as images (wandb, TensorBoard, plots/*.png)",
    )
