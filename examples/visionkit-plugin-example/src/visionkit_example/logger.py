"""``example:jsonl``: a minimal Lightning ``Logger`` writing one JSON object per ``log_metrics`` call."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only


class JsonLinesLogger(Logger):
    """Append ``{"step": ..., "metrics": {...}}`` lines to ``<run_dir>/<filename>``.

    Hyperparameters go to the first line as ``{"hparams": {...}}``. visionkit passes
    ``run_dir`` and ``run_name`` because the constructor accepts them.
    """

    def __init__(self, run_dir: Path, run_name: str = "", filename: str = "example_metrics.jsonl") -> None:
        super().__init__()
        self._run_dir = Path(run_dir)
        self._run_name = run_name
        self.path = self._run_dir / filename

    @property
    def name(self) -> str:
        return self._run_name or "example"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._run_dir)

    @property
    def log_dir(self) -> str:
        return str(self._run_dir)

    def _append(self, record: dict[str, Any]) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        values = vars(params) if isinstance(params, Namespace) else dict(params)
        self._append({"hparams": {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool))}})

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._append({"step": step, "metrics": {k: float(v) for k, v in metrics.items()}})
