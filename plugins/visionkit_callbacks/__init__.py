"""Built-in plugin visionkit_callbacks: ``early-stopping`` and the default callbacks of every run.

Import :mod:`visionkit_callbacks.defaults` for ``default_callbacks`` and
``checkpoint_callback`` (it imports Lightning; this package and its ``plugin`` do not).
"""
