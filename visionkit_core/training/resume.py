"""Find the checkpoint ``--resume`` continues from, falling back past unreadable ones.

The checkpoint is read once: :class:`ResumePoint` carries what was read (the CLI takes the
run's config from it, the assembler hands it to the Trainer), so nothing reads it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionkit_core.errors import CheckpointError, UsageError
from visionkit_core.training.checkpoint import META_KEY, safe_load


@dataclass
class ResumePoint:
    """The checkpoint a run continues from: its path, what it holds, and notes for the user."""

    path: Path
    checkpoint: dict[str, Any] = field(repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def meta(self) -> dict[str, Any]:
        """The checkpoint's ``"visionkit"`` metadata (its run's config, task, data...)."""
        return dict(self.checkpoint[META_KEY])


def newest_run(runs: Path = Path("runs")) -> Path | None:
    """The most recently modified run directory under ``runs`` that has a ``last.ckpt``."""
    if not runs.is_dir():
        return None
    candidates = [d for d in runs.iterdir() if (d / "checkpoints" / "last.ckpt").exists()]
    return max(candidates, key=lambda d: (d / "checkpoints" / "last.ckpt").stat().st_mtime, default=None)


def find_resume_checkpoint(resume: str, run_dir: str | None) -> ResumePoint:
    """The checkpoint ``--resume`` means, read and checked.

    ``resume`` is ``"last"`` (the run in ``run_dir``, or the newest under ``runs/``) or a path.
    An unreadable ``last.ckpt`` falls back to the newest checkpoint of the run that loads.
    """
    if resume != "last":
        path = Path(resume)
        return ResumePoint(path, _checked(safe_load(path), path))
    notes: list[str] = []
    if run_dir is None:
        found = newest_run()
        if found is None:
            raise UsageError(
                "--resume last: no run with checkpoints/last.ckpt under runs/; pass --run-dir RUN"
            )
        notes.append(f"resuming the newest run, {found}")
        run = found
    else:
        run = Path(run_dir)
    ckdir = run / "checkpoints"
    last = ckdir / "last.ckpt"
    candidates = ([last] if last.exists() else []) + sorted(
        (p for p in ckdir.glob("*.ckpt") if p.name != "last.ckpt"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if not candidates:
        raise UsageError(f"--resume last: {str(ckdir)!r} holds no checkpoint to continue from")
    problems = []
    for path in candidates:
        try:
            checkpoint = _checked(safe_load(path), path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems:
            notes.append(f"{problems[0]}; continuing from the newest checkpoint that loads instead: {path}")
        return ResumePoint(path, checkpoint, notes)
    raise CheckpointError("--resume last: no checkpoint of this run loads: " + " | ".join(problems))


def _checked(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"{str(path)!r} is not a visionkit checkpoint; cannot resume from it")
    if "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise CheckpointError(
            f"{str(path)!r} holds weights only (no training state); use --init-from instead"
        )
    return ckpt
