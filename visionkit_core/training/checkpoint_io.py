"""The Trainer's checkpoint I/O: atomic, fsynced saves and ``weights_only=True`` loads (imports Lightning).

Lightning's own moves a file from ``$TMPDIR`` into place without fsync (a copy, truncating the old
``last.ckpt`` first, when ``$TMPDIR`` is another file system): a kill then leaves a truncated checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.fabric.utilities.cloud_io import _load as lightning_load
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from visionkit_core.training.checkpoint import atomic_save, safe_load


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints are replaced atomically; every load is ``weights_only=True``.

    Remote URLs (``s3://`` ...) are saved by Lightning's fsspec code. ``preloaded`` maps a path to
    the checkpoint already read from it (``--resume``): loading that path returns it, unread again.
    """

    def __init__(self, preloaded: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.preloaded = dict(preloaded or {})

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
        else:
            atomic_save(checkpoint, path)

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable[..., Any] | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # ``weights_only`` is ignored on purpose: a checkpoint never gets to run code.
        if str(path) in self.preloaded:
            return self.preloaded.pop(str(path))
        if "://" in str(path):
            return lightning_load(path, map_location=map_location, weights_only=True)  # type: ignore[no-any-return]
        return safe_load(path, map_location=map_location)


def with_atomic_io(plugins: Any, preloaded: dict[str, dict[str, Any]] | None = None) -> list[Any]:
    """The Trainer's ``plugins`` with :class:`AtomicCheckpointIO` added, unless one already sets the I/O."""
    from lightning.fabric.plugins import CheckpointIO

    listed = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if any(isinstance(p, CheckpointIO) for p in listed):
        return listed
    return [*listed, AtomicCheckpointIO(preloaded)]
