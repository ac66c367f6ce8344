"""Built-in plugin visionkit_loggers."""
