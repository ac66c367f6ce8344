"""The RNG states in every checkpoint of a fit, so that ``--resume`` continues exactly."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


class RNGState(Callback):
    """Save and restore the Python, NumPy and torch RNG states with every checkpoint.

    Together with the (seed, epoch)-driven sampler this makes ``--resume`` replay exactly what
    an uninterrupted run would have done. States are stored as plain lists and tensors so the
    checkpoint still loads with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        version, mt, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
        state: dict[str, Any] = {
            "python": [version, list(mt), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],  # type: ignore[union-attr,attr-defined]
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import random

        import numpy as np
        import torch

        version, mt, gauss = state_dict["python"]
        random.setstate((version, tuple(mt), gauss))
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
