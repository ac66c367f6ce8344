"""smp's own pretrained encoders, cache first (the kit's weight cache does timm and torch hub).

smp's encoders come from the Hugging Face Hub (``smp-hub/<name>.<weights>``): when they are
not cached and the network is off, :func:`smp_encoder_weights` raises the kit's clear error
in seconds instead of letting the download code retry for a minute.
"""

from __future__ import annotations

from typing import Any

from visionkit_core import UsageError
from visionkit_core.kit.weights import hf_cached, hf_unreachable


def smp_encoder_weights(encoder: str) -> str:
    """The ``encoder_weights`` for smp's own encoder ``encoder`` (``imagenet`` first), checked reachable."""
    from segmentation_models_pytorch.encoders import encoders

    settings: dict[str, Any] = encoders[encoder]["pretrained_settings"]
    if not settings:
        raise UsageError(f"encoder smp:{encoder} has no pretrained weights; pass --no-pretrained")
    key = "imagenet" if "imagenet" in settings else next(iter(settings))
    repo_id, revision = settings[key]["repo_id"], settings[key].get("revision")
    if all(hf_cached(repo_id, f, revision) for f in ("config.json", "model.safetensors")):
        return key
    error = hf_unreachable(f"smp:{encoder}", repo_id, "model.safetensors")
    if error is not None:
        raise error
    return key
