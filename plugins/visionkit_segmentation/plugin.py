"""Hook implementations of the built-in visionkit_segmentation plugin.

Registers the ``segmentation`` task and the ``segmasks`` (masks layout or Pascal VOC) and
``scenes`` (procedural demo) datasets as ``"module:attr"`` strings, and claims ``--data``
folders in either layout. Nothing here imports torch: the claim only makes ``stat`` calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl
from visionkit_core.kit.registration import Entry, datasets, tasks

if TYPE_CHECKING:
    from pathlib import Path

visionkit_register_tasks = tasks(
    Entry(
        "segmentation",
        "visionkit_segmentation.model:Segmenter",
        "semantic segmentation: smp Unet/FPN/DeepLabV3+ over any encoder, or torchvision models",
    ),
)
visionkit_register_datasets = datasets(
    Entry(
        "segmasks",
        "visionkit_segmentation.datamodule:SegmentationDataModule",
        "segmentation masks: DIR/<split>/{images,masks}/ (+ classes.txt), or Pascal VOC",
        check="visionkit_segmentation.check:check_tree",
    ),
    Entry(
        "scenes",
        "visionkit_segmentation.demo:ScenesDataModule",
        "procedural shapes on textured backgrounds (segmentation demo, 4 classes, 64 px)",
    ),
)


@hookimpl
def visionkit_claim_data(path: Path) -> str | None:
    """``segmasks`` for a folder with train/images + train/masks, or VOC's folders; else None."""
    from visionkit_segmentation.layouts import detect

    return "segmasks" if detect(path) is not None else None
