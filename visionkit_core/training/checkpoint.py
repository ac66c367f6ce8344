"""Self-describing checkpoints, safe loading and atomic saving.

The ``"visionkit"`` entry of a checkpoint holds what is needed to use it alone: resolved config,
class names, preprocessing, backbone/task names and the plugins (with versions) that supplied them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionkit_core.errors import CheckpointError, VisionkitError

META_KEY = "visionkit"
#: 2: task-generic metadata (task, monitor, data_info) written by the core; 1 is still read.
FORMAT_VERSION = 2


def unsafe_global(message: str) -> str | None:
    """The global a ``weights_only=True`` load refused, read from torch's error message (the one check)."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message) or re.search(
        r"global '?([\w.]+)'?", message
    )
    return match.group(1) if match else None


class CheckpointWriteError(VisionkitError):
    """A checkpoint could not be written (disk full, read-only directory); the previous one is intact."""


def safe_load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (passed explicitly, so no environment variable can
    flip it, and never falling back to unsafe unpickling); raise :class:`CheckpointError` otherwise."""
    import pickle

    import torch

    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.ckpt")) or sorted(p.glob("checkpoints/*.ckpt"))  # a checkpoints/ or run dir
        best = [f for f in found if f.name == "last.ckpt"] or found
        hint = f"e.g. {str(best[0])!r}" if best else "such as RUN/checkpoints/last.ckpt"
        raise CheckpointError(f"checkpoint {str(p)!r} is a directory; pass a .ckpt file, {hint}")
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {str(p)!r} not found; pass the path of a .ckpt file written by visionkit"
        )
    if p.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is empty (0 bytes): it was probably cut off while saving"
        )
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        name = unsafe_global(str(err))
        if name:
            raise CheckpointError(
                f"refusing to load {str(p)!r}: it contains the unsafe global {name!r}, which could run code; "
                "visionkit only loads checkpoints with weights_only=True. Re-save it from trusted code "
                "with plain types"
            ) from None
        raise CheckpointError(
            f"checkpoint {str(p)!r} is not a valid checkpoint: it holds neither a checkpoint nor plain "
            "tensors visionkit can load safely (it may be corrupt, or another kind of file)"
        ) from None
    except Exception as err:  # torch raises many types for junk files (KeyError, RuntimeError, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {str(p)!r} cannot be read ({first}); it may be truncated or not a PyTorch checkpoint"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(p)!r} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or choose another --run-dir",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose another --run-dir",
    errno.EFBIG: "the file is larger than this process may write (see `ulimit -f`)",
    errno.EACCES: "the directory is not writable: fix its permissions or choose another --run-dir",
    errno.EPERM: "the directory is not writable: fix its permissions or choose another --run-dir",
    errno.EROFS: "the file system is read-only: choose another --run-dir",
}


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Make ``path`` hold ``data`` all at once: the old content stays until the new one is on disk.

    The bytes go to a temporary file in the same directory (so the final ``os.replace`` never
    crosses file systems), flushed and fsynced before it replaces ``path``; then the directory is
    fsynced so the rename itself survives a power cut. A kill or a full disk never leaves a partial file.
    """

    def write(tmp: Path) -> None:
        # 0o666 minus the umask, like any new file (mkstemp would make it 0o600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    _replace(Path(path), write)


def atomic_link(source: str | Path, target: str | Path) -> None:
    """Make ``target`` a hard link to ``source`` atomically (link to a temp name, then replace).

    For a second name of a checkpoint just written (``last.ckpt`` when it equals the new best): no
    second copy of the bytes. Raises ``OSError`` where hard links are not possible (another file
    system); callers then write the file instead.
    """
    _replace(Path(target), lambda tmp: os.link(source, tmp))


def _replace(target: Path, make: Callable[[Path], None]) -> None:
    """``make`` a temporary file next to ``target``, then put it in ``target``'s place in one step."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        make(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if not hasattr(os, "O_DIRECTORY"):  # Windows: directories cannot be opened, renames are durable
        return
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # file systems without dir fsync
            raise
    finally:
        os.close(fd)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    import json

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def atomic_save(checkpoint: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` ``checkpoint`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Raises :class:`CheckpointWriteError`, one line naming the file and the fix, when the file
    cannot be written; ``path`` then still holds the previous checkpoint, if any.
    """
    import io

    import torch

    target = Path(path)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)  # serialise first: a failure here never touches the disk
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, buffer.getbuffer())
    except OSError as err:
        hint = _WRITE_HINTS.get(err.errno or 0, "check the run directory")
        message = f"cannot write checkpoint {str(target)!r}: {err.strerror or err}; {hint}"
        with contextlib.suppress(OSError):
            if any(target.parent.glob("*.ckpt")):
                message += ". Earlier checkpoints are unchanged: continue with --resume last once fixed"
        raise CheckpointWriteError(message) from None
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):  # left behind by a killed save
        pid = tmp.name[len(target.name) + 2 :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # its writer is gone
            with contextlib.suppress(OSError):
                tmp.unlink()
        except OSError:  # e.g. EPERM: it exists, owned by someone else
            continue
