"""What a run reports: ``summary.json`` after a fit, and the samples a datamodule skipped.

Any Trainer callback with a ``visionkit_summary(trainer) -> dict`` method adds its plain values to
``summary.json`` (the built-in throughput callback gives ``train_images_per_s`` this way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit_core.errors import Terminated
from visionkit_core.plugin.contract import BadSample, TaskSpec

#: summary.json lists at most this many skipped files (the count is always exact).
SKIPPED_LISTED = 1000


def bad_samples_of(datamodule: Any) -> list[BadSample]:
    """The samples a datamodule skipped (``bad_samples()``; ``skipped_images`` for 1.0 datamodules)."""
    if callable(getattr(datamodule, "bad_samples", None)):
        return list(datamodule.bad_samples())
    return [BadSample(str(p), "skipped") for p in sorted(getattr(datamodule, "skipped_images", ()) or ())]


def skipped_name(sample: BadSample) -> str:
    """How summary.json names a skipped sample: its path, with the line for rows of a file (``a.csv:12``)."""
    return sample.path if sample.line is None else f"{sample.path}:{sample.line}"


def fit_summary(trainer: Any, spec: TaskSpec, skipped: list[str], wall_s: float) -> dict[str, Any]:
    """The generic part of ``summary.json`` after ``trainer.fit``: metrics, checkpoints, progress, timing."""
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_score", None)
    return {
        "metrics": {k: round(float(v), 6) for k, v in sorted(trainer.callback_metrics.items()) if "/" in k},
        "monitor": {
            "metric": spec.monitor,
            "mode": spec.mode,
            "best": round(float(best), 6) if best is not None else None,
        },
        "best_checkpoint": str(ckpt.best_model_path) if ckpt and ckpt.best_model_path else None,
        "last_checkpoint": str(Path(ckpt.dirpath) / "last.ckpt") if ckpt and ckpt.dirpath else None,
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "wall_s": round(wall_s, 3),
        "train_images_per_s": 0.0,
        "skipped_images": len(skipped),
        "skipped_files": skipped[:SKIPPED_LISTED],
        "interrupted": bool(trainer.interrupted),
        **callback_summary(trainer),
    }


def callback_summary(trainer: Any) -> dict[str, Any]:
    """What the Trainer's callbacks add to ``summary.json`` (their ``visionkit_summary(trainer)``)."""
    out: dict[str, Any] = {}
    for callback in trainer.callbacks:
        contribute = getattr(callback, "visionkit_summary", None)
        if callable(contribute):
            out.update(contribute(trainer))
    return out


def terminated(trainer: Any, run_dir: Path) -> Terminated:
    """The one-line error for a fit SIGTERM stopped: what was saved (the ``"sigterm"`` entry of a
    callback's ``visionkit_summary``) and how to continue."""
    stop = callback_summary(trainer).get("sigterm") or {}
    resume = f"continue with: visionkit train --resume last --run-dir {run_dir}"
    if stop.get("saved"):
        return Terminated(f"stopped by SIGTERM at step {stop['step']}; saved {stop['saved']}; {resume}")
    if stop.get("error"):
        return Terminated(f"stopped by SIGTERM; {stop['error']}")
    return Terminated(f"stopped by SIGTERM before training started; nothing new to save; {resume}")
