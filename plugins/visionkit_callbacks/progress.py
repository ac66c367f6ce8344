"""Progress display chosen by where the output goes: a live bar on a terminal, one line per epoch otherwise.

Measured with Lightning 2.6: in a pipe or CI log, ``TQDMProgressBar`` writes every refresh
(hundreds of ``\\r``-joined updates for a few epochs) and ``RichProgressBar`` prints nothing
until the run ends. :class:`EpochLineProgressBar` prints one readable line per epoch instead.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar


def progress_bar(stream: IO[str] | None = None) -> ProgressBar:
    """``RichProgressBar`` when stdout is a terminal, else :class:`EpochLineProgressBar`."""
    isatty = getattr(sys.stdout, "isatty", None)
    if callable(isatty) and isatty():
        return RichProgressBar()
    return EpochLineProgressBar(stream)


def _format_value(value: Any) -> str:
    if isinstance(value, (int, str)):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4f}" if number == 0 or 1e-3 <= abs(number) < 1e4 else f"{number:.4g}"


def epoch_metrics(metrics: dict[str, Any]) -> dict[str, str]:
    """Progress-bar metrics for an epoch line: ``x_epoch`` shown as ``x``, its ``x_step`` dropped."""
    shown: dict[str, str] = {}
    for key in sorted(metrics):
        if key.endswith("_step") and f"{key[:-5]}_epoch" in metrics:
            continue
        name = key[:-6] if key.endswith("_epoch") else key
        shown[name] = _format_value(metrics[key])
    return shown


class EpochLineProgressBar(ProgressBar):
    """Prints ``Epoch 3/10  train/loss 0.4120  val/acc 0.9310  (4.2s)`` once per training epoch.

    Writes to ``stream`` (default: stderr, like tqdm) on global rank zero only. Shows the
    metrics the module logged with ``prog_bar=True``.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._enabled = True
        self._epoch_started = time.perf_counter()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("file", self._stream or sys.stderr)
        print(*args, **kwargs)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._epoch_started
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        parts = [f"Epoch {trainer.current_epoch + 1}/{total}"]
        parts += [f"{k} {v}" for k, v in epoch_metrics(dict(trainer.progress_bar_metrics)).items()]
        self.print("  ".join(parts) + f"  ({seconds:.1f}s)", flush=True)
