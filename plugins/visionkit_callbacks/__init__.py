"""Built-in plugin visionkit_callbacks."""
