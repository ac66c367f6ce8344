"""``export --check``: score an exported artefact with the task's own metric, next to PyTorch.

Nothing here knows a task. The exported model (any runtime, behind
:class:`~visionkit_core.kit.exported.ExportedModel`) takes the place of the task's
``forward`` through :attr:`ExportSpec.task_forward`, so the task's ``validation_step`` and its
torchmetrics run unchanged, through the same Trainer as ``visionkit validate``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core.errors import UsageError


@dataclass
class CheckResult:
    """The PyTorch and exported scores of one artefact on one split, and what that means."""

    metric: str
    mode: str
    pytorch: float
    exported: float
    max_drop: float
    images: int
    pytorch_ms: float
    exported_ms: float
    metrics_pytorch: dict[str, float] = field(default_factory=dict)
    metrics_exported: dict[str, float] = field(default_factory=dict)

    @property
    def drop(self) -> float:
        """How much worse the exported model scores (negative: better)."""
        diff = self.pytorch - self.exported
        return diff if self.mode == "max" else -diff

    @property
    def passed(self) -> bool:
        return math.isfinite(self.exported) and self.drop <= self.max_drop

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "pytorch": self.pytorch,
            "exported": self.exported,
            "drop": round(self.drop, 6),
            "max_drop": self.max_drop,
            "passed": self.passed,
            "images": self.images,
            "pytorch_ms_per_image": round(self.pytorch_ms, 3),
            "exported_ms_per_image": round(self.exported_ms, 3),
            "metrics_pytorch": self.metrics_pytorch,
            "metrics_exported": self.metrics_exported,
        }


class _Timer:
    """Forward hooks that time each call of a module's forward and count the images it saw."""

    def __init__(self, module: Any) -> None:
        self.calls: list[tuple[float, int]] = []
        self._start, self._n = 0.0, 0
        self.handles = [
            module.register_forward_pre_hook(self._before),
            module.register_forward_hook(self._after),
        ]

    def _before(self, module: Any, args: Any) -> None:
        self._n = len(args[0]) if args else 0
        self._start = time.perf_counter()

    def _after(self, module: Any, args: Any, output: Any) -> None:
        self.calls.append((time.perf_counter() - self._start, self._n))

    @property
    def images(self) -> int:
        return sum(n for _, n in self.calls)

    def close(self) -> float:
        """Remove the hooks; ms per image (the first call, a warm-up, left out when others follow)."""
        for handle in self.handles:
            handle.remove()
        timed = self.calls[1:] if len(self.calls) > 1 else self.calls
        return 1000.0 * sum(s for s, _ in timed) / max(sum(n for _, n in timed), 1)


def _validate(loaded: Any, dm: Any) -> tuple[dict[str, float], float, int]:
    """``visionkit validate``'s Trainer on ``dm``: metrics, ms per image and images seen."""
    from visionkit_core.workflows.evaluate import eval_trainer

    trainer = eval_trainer("validate", "cpu", spec=loaded.spec)
    timer = _Timer(loaded.model)
    try:
        results = trainer.validate(loaded.model, datamodule=dm, verbose=False)
    finally:
        ms = timer.close()
    metrics = {k: round(float(v), 6) for k, v in sorted(results[0].items())} if results else {}
    return metrics, ms, timer.images


def check_export(
    ckpt: Path,
    artefact: Path,
    fmt: str,
    *,
    data: str | None = None,
    max_drop: float = 0.01,
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> CheckResult:
    """Validate the checkpoint with PyTorch and with ``artefact`` in its place; compare the monitor."""
    from visionkit_core.kit.exported import load_exported, substitute
    from visionkit_core.workflows.inference import check_split, datamodule_for, load_checkpoint
    from visionkit_export.export import export_spec_of

    loaded = load_checkpoint(ckpt)
    dm = datamodule_for(loaded, data, batch_size=batch_size, num_workers=num_workers)
    check_split(dm, data or loaded.config.data or "?", "val")
    metric = loaded.spec.monitor
    spec = export_spec_of(loaded, fmt)
    runtime = load_exported(artefact, fmt, spec.input_names, spec.output_names)  # a bad file: before any work
    torch_metrics, torch_ms, images = _validate(loaded, dm)
    substitute(loaded.model, spec, runtime)
    exported_metrics, exported_ms, _ = _validate(loaded, dm)
    if metric not in torch_metrics or metric not in exported_metrics:
        raise UsageError(f"task {loaded.spec.name!r} logged no {metric!r} in validation; cannot check")
    return CheckResult(
        metric=metric,
        mode=loaded.spec.mode,
        pytorch=torch_metrics[metric],
        exported=exported_metrics[metric],
        max_drop=max_drop,
        images=images,
        pytorch_ms=torch_ms,
        exported_ms=exported_ms,
        metrics_pytorch=torch_metrics,
        metrics_exported=exported_metrics,
    )
