"""Built-in plugin visionkit_torchvision."""
