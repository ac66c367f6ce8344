"""Hook implementations of the built-in visionkit_classification plugin.

Registers the ``classification`` task: :class:`visionkit_classification.model.ImageClassifier`,
referenced as a ``"module:attr"`` string so that discovery never imports Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from visionkit_core import Registrar


@hookimpl
def visionkit_register_tasks(registry: Registrar) -> None:
    """Register the ``classification`` task."""
    registry.add(
        "classification",
        "visionkit_classification.model:ImageClassifier",
        description="multiclass image classification (cross-entropy, AdamW, warmup + cosine)",
    )
