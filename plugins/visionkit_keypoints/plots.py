"""Keypoint plots on the kit's evaluation callback, written to ``<run_dir>/plots/``.

- ``training_curves.png`` + ``history.csv`` (every epoch): train loss, val OKS and box mAP;
- ``keypoint_samples.png`` (end of fit): validation images of the last epoch with the true
  skeletons (green) and predicted ones (red, score >= 0.5) drawn, from the task's own
  validation forward;
- ``per_class_ap.png`` + ``per_class_ap.csv`` (end of fit): OKS AP@[.5:.95] per class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L

from visionkit_core import write_csv
from visionkit_core.kit.evaluation import EvaluationCallback, history_columns
from visionkit_core.kit.plots import cell, media_grid, per_class_bars
from visionkit_keypoints.outputs import media_samples

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class KeypointPlots(EvaluationCallback):
    """Curves every epoch; a sample grid and per-class keypoint AP bars at the end of fit."""

    columns = history_columns("val/kp_map", "val/kp_map_50", "val/map")
    default_samples = 8
    panels = (("loss", ("train/loss",)), ("mAP", ("val/kp_map", "val/kp_map_50", "val/map")))

    def media(self, pl_module: Any, stored: Any, limit: int) -> list[Any]:
        images, targets, preds = stored
        return media_samples(images[:limit], targets[:limit], preds[:limit], pl_module.skeleton)

    def figures(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Figure]:
        ap = {n: (v if v >= 0 else None) for n, v in getattr(pl_module, "last_ap", {}).get("val", {}).items()}
        figures = {}
        if ap:
            write_csv(
                self.plots_dir / "per_class_ap.csv", ["class", "kp_ap"], [[n, cell(v)] for n, v in ap.items()]
            )
            present = [v for v in ap.values() if v is not None]
            title = f"Per-class keypoint AP (OKS mAP {sum(present) / len(present) if present else 0.0:.3f})"
            figures["per_class_ap"] = per_class_bars(ap, "OKS AP@[.5:.95] (last validation)", title)
        if self.samples:
            figures["keypoint_samples"] = media_grid(self.samples, list(pl_module.class_names))
        return figures
