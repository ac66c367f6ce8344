"""Find the checkpoint ``--resume`` continues from, falling back past unreadable ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit_core.errors import CheckpointError, UsageError
from visionkit_core.training.checkpoint import META_KEY, safe_load


def newest_run(runs: Path = Path("runs")) -> Path | None:
    """The most recently modified run directory under ``runs`` that has a ``last.ckpt``."""
    if not runs.is_dir():
        return None
    candidates = [d for d in runs.iterdir() if (d / "checkpoints" / "last.ckpt").exists()]
    return max(candidates, key=lambda d: (d / "checkpoints" / "last.ckpt").stat().st_mtime, default=None)


#: Checkpoints read while looking for the one to resume, by (path, size, mtime): the CLI, the
#: assembler and the Trainer then share one read of the file.
_LOADED: dict[tuple[str, int, int], dict[str, Any]] = {}


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """:func:`safe_load`, once per file version in this process."""
    try:
        key = _key(path)
    except OSError:
        return safe_load(path)  # safe_load names what is wrong with the path
    if key not in _LOADED:
        _LOADED.clear()  # keep at most one checkpoint in memory
        _LOADED[key] = safe_load(path)
    return _LOADED[key]


def take_loaded(path: Path) -> dict[str, Any] | None:
    """The checkpoint already read from ``path`` (forgotten here: the caller owns it now)."""
    try:
        return _LOADED.pop(_key(path), None)
    except OSError:
        return None


def find_resume_checkpoint(resume: str, run_dir: str | None) -> tuple[Path, dict[str, Any], list[str]]:
    """Return (checkpoint, its visionkit metadata, notes for the user).

    ``resume`` is ``"last"`` (the run in ``run_dir``, or the newest under ``runs/``) or a path.
    An unreadable ``last.ckpt`` falls back to the newest checkpoint of the run that loads.
    """
    notes: list[str] = []
    if resume != "last":
        path = Path(resume)
        ckpt = read_checkpoint(path)
        return path, _meta(ckpt, path), notes
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
            ckpt = read_checkpoint(path)
            meta = _meta(ckpt, path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems:
            notes.append(f"{problems[0]}; continuing from the newest checkpoint that loads instead: {path}")
        return path, meta, notes
    raise CheckpointError("--resume last: no checkpoint of this run loads: " + " | ".join(problems))


def _meta(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"{str(path)!r} is not a visionkit checkpoint; cannot resume from it")
    if "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise CheckpointError(
            f"{str(path)!r} holds weights only (no training state); use --init-from instead"
        )
    return meta
