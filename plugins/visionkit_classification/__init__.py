"""Built-in plugin visionkit_classification."""
