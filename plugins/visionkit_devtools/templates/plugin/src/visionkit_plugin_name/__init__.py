"""visionkit-plugin-name: a visionkit plugin (namespace ``plugin_name``)."""

__version__ = "0.1.0"
