"""The contract checks behind ``visionkit plugins check`` and :mod:`visionkit_core.testing`.

Part of the kit so that the command (the built-in ``visionkit_devtools`` plugin) and a plugin
author's own tests (``visionkit_core.testing``) run the same checks without the core importing a
plugin. Importing this package imports neither torch nor Lightning.
"""
