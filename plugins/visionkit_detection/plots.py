"""Detection plots on the kit's evaluation callback, written to ``<run_dir>/plots/``.

- ``training_curves.png`` + ``history.csv`` (after every epoch): train loss and val mAP;
- ``detection_samples.png`` (end of fit): validation images of the last epoch with the true
  boxes (green) and the predicted ones (red, score >= 0.3), from the task's own validation
  forward (no second pass);
- ``per_class_ap.png`` + ``per_class_ap.csv`` (end of fit): AP@[.5:.95] per class of the
  last validation.

Rank zero writes; a failing plot warns and never fails a finished run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L

from visionkit_core import write_csv
from visionkit_core.kit.evaluation import EvaluationCallback, history_columns
from visionkit_core.kit.plots import cell, media_grid, per_class_bars
from visionkit_detection.outputs import media_samples

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAMPLES = 8


class DetectionPlots(EvaluationCallback):
    """Curves every epoch; a sample grid and per-class AP bars at the end of fit."""

    columns = history_columns("val/map", "val/map_50", "val/map_75")
    default_samples = SAMPLES
    panels = (("loss", ("train/loss",)), ("mAP", ("val/map", "val/map_50", "val/map_75")))

    def media(self, pl_module: Any, stored: Any, limit: int) -> list[Any]:
        images, targets, preds = stored
        return media_samples(images[:limit], targets[:limit], preds[:limit])

    def figures(self, trainer: L.Trainer | None, pl_module: Any) -> dict[str, Figure]:
        names = [str(n) for n in getattr(pl_module, "class_names", [])]
        ap = {n: (v if v >= 0 else None) for n, v in getattr(pl_module, "last_ap", {}).get("val", {}).items()}
        figures = {}
        if ap:
            write_csv(
                self.plots_dir / "per_class_ap.csv", ["class", "ap"], [[n, cell(v)] for n, v in ap.items()]
            )
            present = [v for v in ap.values() if v is not None]
            title = f"Per-class AP (mAP {sum(present) / len(present) if present else 0.0:.3f})"
            figures["per_class_ap"] = per_class_bars(ap, "AP@[.5:.95] (last validation)", title)
        if self.samples:
            figures["detection_samples"] = media_grid(self.samples, names)
        return figures
