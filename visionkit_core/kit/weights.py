"""Pretrained weights, cache first: find the file the real loading code would read, fail fast offline.

timm models load through timm's pretrained config (Hugging Face Hub or a URL), torchvision
models through the torch hub cache, others from the Hub. Each helper here finds the file that
code would read; when it is not cached and the network is off (``HF_HUB_OFFLINE``, or nothing
answers within :data:`PROBE_TIMEOUT`), it raises the core's ``pretrained_unavailable(...)``
(a usage error naming the model, the file expected and how to fetch it) instead of letting
the download code retry for a minute. Torch-free at import; timm and huggingface_hub are
imported when a helper needs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from visionkit_core import UsageError, pretrained_unavailable, probe_url, torch_hub_checkpoint

#: Seconds a probe of the Hub or a download URL may take before the network counts as off.
PROBE_TIMEOUT = 3.0
_TRUE = {"1", "true", "yes", "on"}


def hf_hub_cache_dir() -> str:
    """The Hugging Face hub cache, from the environment as it is now (not at import time)."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return os.path.expanduser(os.path.expandvars(explicit))
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.join(os.path.expanduser(os.path.expandvars(home)), "hub")


def hf_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network access."""
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE


def hf_cached(repo_id: str, filename: str, revision: str | None = None) -> str | None:
    """The cached path of ``repo_id/filename`` in the Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_hub_cache_dir(), revision=revision)
    return found if isinstance(found, str) else None


def hf_unreachable(model: str, repo_id: str, filename: str) -> UsageError | None:
    """The error for ``model`` when ``repo_id/filename`` is not cached and cannot be fetched, else None."""
    expected = os.path.join(
        hf_hub_cache_dir(), f"models--{repo_id.replace('/', '--')}", "snapshots", "<rev>", filename
    )
    source = f"https://huggingface.co/{repo_id}"
    hint = f"`hf download {repo_id}` on a machine with internet, then copy its HF_HOME cache"
    if hf_offline():
        reason = "they are not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    else:
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        why = probe_url(f"{endpoint.rstrip('/')}/{repo_id}/resolve/main/{filename}", PROBE_TIMEOUT)
        if why is None:
            return None  # the Hub answers: let the real code download
        reason = f"they are not in the Hugging Face cache and the Hub is unreachable ({why})"
    return pretrained_unavailable(model, reason=reason, expected=expected, source=source, fetch_hint=hint)


def timm_pretrained_kwargs(name: str) -> dict[str, Any]:
    """Extra ``timm.create_model`` arguments that load ``name``'s weights from the local cache, or raise."""
    from timm.models import get_pretrained_cfg

    model = f"timm:{name}"
    pcfg = get_pretrained_cfg(name)
    if pcfg is None:
        raise UsageError(f"{model} has no pretrained weights; pass --no-pretrained or pick a tagged name")
    cfg: dict[str, Any] = pcfg.to_dict()  # type: ignore[no-untyped-call]
    if cfg.get("state_dict") is not None or cfg.get("file"):
        return {}
    if cfg.get("hf_hub_id"):
        repo_id, _, revision = str(cfg["hf_hub_id"]).partition("@")
        wanted = cfg.get("hf_hub_filename") or "pytorch_model.bin"
        names = ["model.safetensors", wanted] if wanted == "pytorch_model.bin" else [wanted]
        for filename in names:
            found = hf_cached(repo_id, filename, revision or None)
            if found:
                return {"pretrained_cfg_overlay": {"file": found, "source": None}}
        error = hf_unreachable(model, repo_id, names[0])
        if error is not None:
            raise error
        return {}
    if cfg.get("url"):
        torch_hub_file(model, str(cfg["url"]))
        return {}
    raise UsageError(f"{model} has no pretrained weights; pass --no-pretrained")


def torch_hub_file(model: str, url: str) -> Path:
    """Where torch hub caches ``url``; raises when it is not there and ``url`` cannot be reached."""
    path = torch_hub_checkpoint(url)
    if not path.is_file() and (reason := probe_url(url, PROBE_TIMEOUT)) is not None:
        raise pretrained_unavailable(
            model, reason=f"not in the torch hub cache and {reason}", expected=str(path), source=url
        )
    return path
