"""Built-in plugin visionkit_imagefolder."""
