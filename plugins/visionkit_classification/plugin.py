"""Hook implementations of the built-in visionkit_classification plugin.

Registers the ``classification`` task (:class:`visionkit_classification.model.ImageClassifier`) and
the ``multilabel`` task (:class:`visionkit_classification.multilabel.MultiLabelClassifier`),
referenced as a ``"module:attr"`` string so that discovery never imports Lightning.
"""

from __future__ import annotations

from visionkit_core.kit.registration import Entry, tasks

visionkit_register_tasks = tasks(
    Entry(
        "classification",
        "visionkit_classification.model:ImageClassifier",
        "multiclass image classification (cross-entropy, AdamW, warmup + cosine)",
    ),
    Entry(
        "multilabel",
        "visionkit_classification.multilabel:MultiLabelClassifier",
        "multi-label image classification (BCE, val/map, per-class thresholds tuned on val)",
    ),
)
