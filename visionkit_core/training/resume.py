"""Find and read (once) the checkpoint ``--resume`` continues from, falling back past unreadable ones."""

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


def find_resume_checkpoint(resume: str, run_dir: str | None) -> ResumePoint:
    """The checkpoint ``--resume`` means (``"last"``: of the run in ``run_dir``, else of the newest one
    under ``runs/``; or a path), read and checked."""
    if resume != "last":
        path = Path(resume)
        return ResumePoint(path, _checked(safe_load(path), path))
    notes: list[str] = []
    if run_dir is None:
        runs = [d for d in Path("runs").glob("*") if (d / "checkpoints" / "last.ckpt").exists()]
        found = max(runs, key=lambda d: (d / "checkpoints" / "last.ckpt").stat().st_mtime, default=None)
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
