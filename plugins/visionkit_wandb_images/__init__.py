"""Built-in plugin visionkit_wandb_images."""
