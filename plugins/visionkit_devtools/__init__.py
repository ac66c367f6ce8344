"""Built-in plugin visionkit_devtools: the developer tools of the ``visionkit`` command line.

``visionkit plugins check`` (:mod:`.conformance`, :mod:`.smoke`), ``visionkit plugins new``
(:mod:`.scaffold` and ``templates/``) and ``visionkit tune`` (:mod:`.tune`) arrive through the
``visionkit_add_commands`` hook like any plugin's commands. :mod:`visionkit_core.testing`
re-exports the checks and the tiny-data writers (:mod:`.images`) for plugin authors' tests.
Importing this package and its ``plugin`` imports neither torch nor Lightning.
"""
