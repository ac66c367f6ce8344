"""COCO mAP over every process's images, in the order one process would have seen them.

torchmetrics' ``MeanAveragePrecision`` keeps one list entry per image and gathers each entry
with its own collective call, which needs every rank to hold the same number of images: a
validation set that does not divide by the number of processes (ranks with 7 and 6 images)
would hang or crash, and padding the shards would count images twice. :class:`GatheredMAP`
instead gathers each rank's lists as one object, puts the images back in dataset order (by
the ``image_id`` each target carries) and evaluates that, so a 2-process validation gives
exactly the mAP of a 1-process one. An image met twice (an unreadable one replaced by the next
good one) is counted once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

#: The per-image list states of MeanAveragePrecision that hold boxes (masks are not used here).
STATES = (
    "detection_box",
    "detection_scores",
    "detection_labels",
    "groundtruth_box",
    "groundtruth_labels",
    "groundtruth_crowds",
    "groundtruth_area",
)


class GatheredMAP(MeanAveragePrecision):
    """``MeanAveragePrecision(backend="faster_coco_eval")``, gathered per rank as whole lists."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(backend="faster_coco_eval", sync_on_compute=False, **kwargs)
        self.add_state("image_ids", default=[], dist_reduce_fx=None)

    def update(self, preds: list[dict[str, Tensor]], target: list[dict[str, Tensor]]) -> None:
        super().update(preds, target)
        for t in target:
            image_id = t.get("image_id")
            if image_id is None:  # targets without ids: in the order they come
                image_id = torch.tensor(len(self.image_ids))  # type: ignore[arg-type]
            self.image_ids.append(image_id.reshape(()).cpu())  # type: ignore[attr-defined]

    def compute(self) -> dict[str, Tensor]:
        import torch.distributed as dist

        local = {name: [t.cpu() for t in getattr(self, name)] for name in (*STATES, "image_ids")}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
        else:
            parts = [local]
        ids = [int(i) for part in parts for i in part["image_ids"]]
        first = {}
        for position, image_id in enumerate(ids):  # an image met twice (a bad one replaced) counts once
            first.setdefault(image_id, position)
        order = [first[i] for i in sorted(first)]
        device = self.device
        try:
            for name in STATES:
                merged = [t for part in parts for t in part[name]]
                setattr(self, name, [merged[i].to(device) for i in order])
            return super().compute()  # type: ignore[no-any-return]
        finally:
            for name in STATES:
                setattr(self, name, [t.to(device) for t in local[name]])
