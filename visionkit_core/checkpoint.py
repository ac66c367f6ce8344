"""Self-describing checkpoints and safe loading.

Every load in visionkit goes through :func:`safe_load`, which passes
``weights_only=True`` explicitly (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot flip it)
and never falls back to unsafe unpickling. The ``"visionkit"`` entry of a checkpoint
holds what is needed to use it alone: resolved config, class names, preprocessing,
backbone/task names and the plugins (with versions) that supplied them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from visionkit_core.errors import CheckpointError

META_KEY = "visionkit"
FORMAT_VERSION = 1


def _unsafe_global(message: str) -> str | None:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message) or re.search(
        r"global '?([\w.]+)'?", message
    )
    return match.group(1) if match else None


def safe_load(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` otherwise."""
    import pickle

    import torch

    p = Path(path)
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
        name = _unsafe_global(str(err))
        if name:
            raise CheckpointError(
                f"refusing to load {str(p)!r}: it contains the unsafe global {name!r}, which could run code; "
                "visionkit only loads checkpoints with weights_only=True. Re-save it from trusted code "
                "with plain types"
            ) from None
        raise CheckpointError(
            f"checkpoint {str(p)!r} is not a valid checkpoint: {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:  # torch raises many types for junk files (KeyError, RuntimeError, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {str(p)!r} cannot be read ({first}); it may be truncated or not a PyTorch checkpoint"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(p)!r} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def read_meta(path: str | Path) -> dict[str, Any]:
    """Return the visionkit metadata of a checkpoint (error if it has none)."""
    ckpt = safe_load(path)
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no visionkit metadata; it was not written by `visionkit train`"
        )
    return meta
