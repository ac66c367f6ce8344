"""visionkit-plugin-example: a worked third-party visionkit plugin (namespace ``example``).

Registers the ``example:tinynet`` backbone, the ``example:shapes`` dataset, the
``example:record-epochs`` callback, the ``example:jsonl`` logger and the ``visionkit
example-hello`` command. Importing this package (or :mod:`visionkit_example.plugin`) never
imports torch or Lightning: the components live in their own modules, imported only when
a run builds them.
"""

from __future__ import annotations

__version__ = "0.1.0"
