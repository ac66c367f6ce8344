"""Built-in plugin visionkit_timm."""
