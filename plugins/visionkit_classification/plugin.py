"""Hook implementations of the built-in visionkit_classification plugin.

Registers the ``classification`` task (:class:`visionkit_classification.model.ImageClassifier`) and
the ``multilabel`` task (:class:`visionkit_classification.multilabel.MultiLabelClassifier`),
referenced as a ``"module:attr"`` string so that discovery never imports Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from visionkit_core import Registrar


@hookimpl
def visionkit_register_tasks(registry: Registrar) -> None:
    """Register the ``classification`` and ``multilabel`` tasks."""
    registry.add(
        "classification",
        "visionkit_classification.model:ImageClassifier",
        description="multiclass image classification (cross-entropy, AdamW, warmup + cosine)",
    )
    registry.add(
        "multilabel",
        "visionkit_classification.multilabel:MultiLabelClassifier",
        description="multi-label image classification (BCE, val/map, per-class thresholds tuned on val)",
    )
