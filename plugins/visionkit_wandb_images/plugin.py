"""Hook implementations of the built-in visionkit_wandb_images plugin: the ``wandb-images`` callback
(options: num_samples, every_n_epochs)."""

from __future__ import annotations

from visionkit_core.kit.registration import Entry, callbacks

visionkit_register_callbacks = callbacks(
    Entry(
        "wandb-images",
        "visionkit_wandb_images.callback:WandbImagesCallback",
        "sample validation predictions as images (wandb, TensorBoard, plots/*.png)",
    ),
)
