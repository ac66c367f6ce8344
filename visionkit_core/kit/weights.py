"""Weights: local files loaded safely, and pretrained weights found in their cache first.

:func:`load_weights` reads a ``.safetensors`` file or a PyTorch state dict (always with
``torch.load(..., weights_only=True)``; an unsafe pickle is refused, never retried unsafely),
matches its keys to a model (stripping ``model.``/``module.``/``backbone.`` prefixes), skips
tensors whose shape differs (e.g. a head for another class count) and reports what it did.

Pretrained weights: timm models load through timm's pretrained config (Hugging Face Hub or a
URL), torchvision models through the torch hub cache, others from the Hub. Each helper here
finds the file that code would read; when it is not cached and the network is off
(``HF_HUB_OFFLINE``, or nothing answers within :data:`PROBE_TIMEOUT`), it raises
:func:`pretrained_unavailable` (a usage error naming the model, the file expected and how to
fetch it) instead of letting the download code retry for a minute.

Torch-free at import: torch, timm and huggingface_hub are imported when a helper needs them.
The core's names (``load_weights``, ``read_state_dict``, ``pretrained_unavailable``,
``probe_url``, ``torch_hub_checkpoint``) are public from ``visionkit_core`` too.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from visionkit_core.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn

#: Prefixes that training frameworks put in front of a network's own keys.
STRIP_PREFIXES = ("model.", "module.", "backbone.", "_orig_mod.", "net.")
#: Keys under which checkpoints commonly nest the state dict.
NESTED_KEYS = ("state_dict", "model", "model_state_dict")


@dataclass
class LoadReport:
    """What :func:`load_weights` did: tensors loaded, skipped for shape, missing, unexpected."""

    path: str
    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the console, e.g. ``loaded 120/122 tensors from w.pt; skipped (shape) fc.weight``."""
        total = len(self.loaded) + len(self.shape_mismatch) + len(self.missing)
        parts = [f"loaded {len(self.loaded)}/{total} tensors from {self.path}"]
        if self.shape_mismatch:
            parts.append("skipped (shape differs): " + _few(k for k, _, _ in self.shape_mismatch))
        if self.missing:
            parts.append("missing (kept initial values): " + _few(self.missing))
        if self.unexpected:
            parts.append("unexpected (ignored): " + _few(self.unexpected))
        return "; ".join(parts)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read the tensors of a ``.safetensors`` file or a (safe) PyTorch checkpoint, on the CPU.

    A dict holding ``state_dict``/``model``/``model_state_dict`` is unwrapped. Errors are
    :class:`UsageError` naming the file and the problem.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise UsageError(f"weights file {str(p)!r} {what}; pass an existing .safetensors or .pt file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except Exception as err:
            raise UsageError(
                f"cannot read weights file {str(p)!r}: not a valid safetensors file ({err})"
            ) from None
    try:
        obj: Any = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        from visionkit_core.training.checkpoint import unsafe_global

        name = unsafe_global(str(err))
        if name:
            raise UsageError(
                f"refusing to load weights file {str(p)!r}: it is not a plain state dict, its pickle "
                f"references {name} which could run code; save a state dict "
                "(torch.save(model.state_dict(), ...)) or a .safetensors file instead"
            ) from None
        first = (str(err).strip().splitlines() or [""])[0]
        raise UsageError(
            f"cannot read weights file {str(p)!r}: not a PyTorch state dict or safetensors file "
            f"({type(err).__name__}: {first})"
        ) from None
    for _ in range(2):  # e.g. {"model": {"state_dict": ...}}
        if isinstance(obj, dict):
            nested = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), dict)), None)
            if nested is not None:
                obj = nested
    tensors = (
        {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if isinstance(obj, dict)
        else {}
    )
    if not tensors:
        raise UsageError(
            f"weights file {str(p)!r} holds no tensors (got {type(obj).__name__}); expected a state dict"
        )
    return tensors


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Load the matching tensors of ``path`` into ``model`` and report what matched.

    Tensors whose shape differs from the model's are skipped (reported, not an error);
    if no tensor matches at all a :class:`UsageError` names the file.
    """
    import torch

    source = read_state_dict(path)
    target = model.state_dict()
    source = _align_prefixes(source, set(target))
    report = LoadReport(str(path))
    accepted: dict[str, torch.Tensor] = {}
    order = {k: i for i, k in enumerate(target)}
    for key, tensor in sorted(source.items(), key=lambda kv: order.get(kv[0], len(order))):
        if key not in target:
            report.unexpected.append(key)
        elif tuple(tensor.shape) != tuple(target[key].shape):
            report.shape_mismatch.append((key, tuple(tensor.shape), tuple(target[key].shape)))
        else:
            accepted[key] = tensor
            report.loaded.append(key)
    report.missing = [k for k in target if k not in source]
    if not accepted:
        example = ", ".join(list(source)[:3])
        raise UsageError(
            f"weights file {str(path)!r} matches nothing in the model "
            f"(its keys look like: {example}; the model's like: {', '.join(list(target)[:3])}); "
            "is it for a different backbone?"
        )
    with torch.no_grad():
        model.load_state_dict(accepted, strict=False)
    return report


def _align_prefixes(source: dict[str, Tensor], wanted: set[str]) -> dict[str, Tensor]:
    """Strip known prefixes from each key until it names a model key (keys that never do stay)."""
    out = {k: v for k, v in source.items() if k in wanted}
    for key, value in source.items():
        if key in wanted:
            continue
        stripped = key
        while stripped not in wanted:
            prefix = next((p for p in STRIP_PREFIXES if stripped.startswith(p)), None)
            if prefix is None:
                stripped = key
                break
            stripped = stripped.removeprefix(prefix)
        out.setdefault(stripped, value)  # an exact key wins over a stripped duplicate
    return out


def _few(keys: Any, limit: int = 4) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# -- pretrained weights: cache first, a clear error offline ------------------------------


def pretrained_unavailable(
    model: str, *, reason: str, expected: str, source: str, fetch_hint: str = ""
) -> UsageError:
    """The one-line error for pretrained weights that are neither cached nor downloadable."""
    hint = f" ({fetch_hint})" if fetch_hint else ""
    return UsageError(
        f"cannot load pretrained weights for {model}: {reason}. Expected {expected} (from {source}). "
        f"Fix: pass --no-pretrained, or --weights FILE (a local .safetensors or .pt), "
        f"or put the file there{hint}"
    )


def torch_hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches ``url`` (honours ``TORCH_HOME``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def probe_url(url: str, timeout: float = 3.0) -> str | None:
    """Return why ``url`` cannot be reached (DNS, refused, timeout), or ``None`` if it answers.

    A quick HEAD request with a short timeout, so an offline machine fails in seconds
    instead of hanging in a download; HTTP errors mean the network works (``None``).
    """
    opener = urllib.request.build_opener()  # built now, so proxy variables are read now
    try:
        with opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as err:
        return f"no network ({err.reason})"
    except (OSError, ValueError) as err:
        return f"no network ({type(err).__name__}: {err})"


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


__all__ = [
    "PROBE_TIMEOUT",
    "LoadReport",
    "hf_cached",
    "hf_hub_cache_dir",
    "hf_offline",
    "hf_unreachable",
    "load_weights",
    "pretrained_unavailable",
    "probe_url",
    "read_state_dict",
    "timm_pretrained_kwargs",
    "torch_hub_checkpoint",
    "torch_hub_file",
]
