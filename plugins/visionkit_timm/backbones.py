"""timm models as visionkit backbones: the dynamic ``timm:`` namespace.

Any ``timm.list_models()`` name resolves, with or without a pretrained tag
(``timm:resnet10t.c3_in1k``). Pretrained weights use timm's own loading code, but the
Hugging Face cache is checked first (``HF_HOME``/``HF_HUB_CACHE`` read at call time) and,
when the file is not there, offline mode or a dead network fail within seconds with a
:class:`UsageError` instead of huggingface_hub's ~50 s of retries.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from visionkit_core import ConfigError, UsageError, pretrained_unavailable, probe_url, torch_hub_checkpoint

if TYPE_CHECKING:
    from torch import nn

#: Seconds to wait for the Hub before declaring the network down.
PROBE_TIMEOUT = 3.0
_TRUE = {"1", "true", "yes", "on"}


def list_names() -> list[str]:
    """Every timm architecture (``timm.list_models()``); tagged names resolve too."""
    import timm

    return list(timm.list_models())


def resolve(name: str) -> Callable[..., Any] | None:
    """The factory for ``timm:<name>``, or ``None`` when timm has no such model (or tag)."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        return None
    if "." in name:
        try:
            get_pretrained_cfg(name)
        except RuntimeError:  # "Invalid pretrained tag"
            return None

    def factory(
        *,
        num_classes: int = 0,
        pretrained: bool = False,
        drop_rate: float | None = None,
        drop_path_rate: float | None = None,
        global_pool: str | None = None,
        features_only: bool = False,
        out_indices: tuple[int, ...] | None = None,
    ) -> nn.Module:
        return create_timm_backbone(
            name,
            num_classes=num_classes,
            pretrained=pretrained,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            global_pool=global_pool,
            features_only=features_only,
            out_indices=out_indices,
        )

    factory.__name__ = factory.__qualname__ = name.replace(".", "_")
    factory.__doc__ = (
        f"timm model {name!r}. Options: drop_rate (dropout before the head), drop_path_rate "
        "(stochastic depth), global_pool ('avg', 'max', 'avgmax', 'token', ...); None keeps timm's default."
    )
    return factory


def create_timm_backbone(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    global_pool: str | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> nn.Module:
    """``timm.create_model`` with a ``num_classes`` head, options only when given, cache-first weights.

    ``features_only=True``: timm's feature extractor instead (a list of feature maps, the
    levels ``out_indices`` picks, all when ``None``), carrying ``visionkit_feature_info``.
    """
    import timm

    kwargs: dict[str, Any] = {"num_classes": num_classes}
    for key, value in (
        ("drop_rate", drop_rate),
        ("drop_path_rate", drop_path_rate),
        ("global_pool", global_pool),
    ):
        if value is not None:
            kwargs[key] = value
    if features_only:
        return _timm_features(name, pretrained, out_indices, kwargs)
    if pretrained:
        kwargs.update(_pretrained_kwargs(name))
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ConfigError(f"--set backbone: timm:{name} does not accept an option given: {err}") from None
        raise
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise UsageError(
            f"cannot load pretrained weights for timm:{name}: {type(err).__name__}: "
            f"{(str(err).splitlines() or [''])[0]}. Fix: pass --no-pretrained, or --weights FILE"
        ) from None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    model.visionkit_preprocessing = preprocessing_from_cfg(cfg)  # type: ignore[assignment]
    return model  # type: ignore[no-any-return]


def _timm_features(
    name: str, pretrained: bool, out_indices: tuple[int, ...] | None, kwargs: dict[str, Any]
) -> nn.Module:
    """timm's ``features_only`` model of ``name`` with ``visionkit_feature_info`` declared."""
    import timm

    from visionkit_core import FeatureLevel

    kwargs = {k: v for k, v in kwargs.items() if k not in ("num_classes", "global_pool")}
    kwargs["features_only"] = True
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    if pretrained:
        kwargs.update(_pretrained_kwargs(name))
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as err:
        if pretrained and not isinstance(err, NotImplementedError):  # timm: no features for this model
            raise UsageError(
                f"cannot load pretrained weights for timm:{name}: {type(err).__name__}: "
                f"{(str(err).splitlines() or [''])[0]}. Fix: pass --no-pretrained, or --weights FILE"
            ) from None
        raise _no_features(name, out_indices, err) from None
    except (TypeError, AssertionError, IndexError, ValueError) as err:
        raise _no_features(name, out_indices, err) from None
    info = model.feature_info
    model.visionkit_feature_info = [  # type: ignore[assignment]
        FeatureLevel(channels=int(c), reduction=int(r))
        for c, r in zip(info.channels(), info.reduction(), strict=True)
    ]
    cfg = getattr(model, "pretrained_cfg", None) or {}
    model.visionkit_preprocessing = preprocessing_from_cfg(cfg)  # type: ignore[assignment]
    return model  # type: ignore[no-any-return]


def _no_features(name: str, out_indices: tuple[int, ...] | None, err: BaseException) -> UsageError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    picked = f" with out_indices={tuple(out_indices)}" if out_indices is not None else ""
    return UsageError(
        f"timm:{name} cannot give feature maps{picked} (timm features_only: {type(err).__name__}: {first}); "
        "choose another backbone or other out_indices"
    )


def preprocessing_from_cfg(cfg: Any) -> dict[str, Any]:
    """visionkit's preprocessing dict (plain types) from a timm ``pretrained_cfg``."""
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    mean = cfg.get("mean") or (0.485, 0.456, 0.406)
    std = cfg.get("std") or (0.229, 0.224, 0.225)
    interpolation = cfg.get("interpolation") or "bicubic"
    return {
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "interpolation": interpolation if interpolation in ("bilinear", "bicubic") else "bilinear",
        "crop_pct": float(cfg.get("crop_pct") or 0.875),
    }


# -- pretrained weights, cache first --------------------------------------------------------


def hf_hub_cache_dir() -> str:
    """The Hugging Face hub cache, from the environment as it is *now* (not at import time)."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return os.path.expanduser(os.path.expandvars(explicit))
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.join(os.path.expanduser(os.path.expandvars(home)), "hub")


def hf_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network access."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE and env == "")


def _hf_filenames(cfg: dict[str, Any]) -> list[str]:
    """Files timm would fetch from the Hub, preferred (safetensors) first."""
    wanted = cfg.get("hf_hub_filename") or "pytorch_model.bin"
    names = [wanted]
    if wanted == "pytorch_model.bin":
        names.insert(0, "model.safetensors")
    elif wanted.endswith(".bin"):
        names.insert(0, wanted[:-4] + ".safetensors")
    return names


def _pretrained_kwargs(name: str) -> dict[str, Any]:
    """Extra ``create_model`` arguments that make timm load from the local cache, or raise fast."""
    from timm.models import get_pretrained_cfg

    pcfg = get_pretrained_cfg(name)
    if pcfg is None:
        raise UsageError(f"timm:{name} has no pretrained weights; pass --no-pretrained or pick a tagged name")
    cfg: dict[str, Any] = pcfg.to_dict()  # type: ignore[no-untyped-call]
    model = f"timm:{name}"
    if cfg.get("state_dict") is not None or cfg.get("file"):
        return {}  # timm's own local source
    if cfg.get("hf_hub_id"):
        return _from_hf_cache(model, cfg)
    url = cfg.get("url")
    if url:
        path = torch_hub_checkpoint(url)
        if not path.is_file() and (reason := probe_url(url, PROBE_TIMEOUT)) is not None:
            raise pretrained_unavailable(
                model, reason=f"not in the torch hub cache and {reason}", expected=str(path), source=url
            )
        return {}
    raise UsageError(f"{model} has no pretrained weights; pass --no-pretrained")


def _from_hf_cache(model: str, cfg: dict[str, Any]) -> dict[str, Any]:
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    repo_id, _, revision = str(cfg["hf_hub_id"]).partition("@")
    cache_dir = hf_hub_cache_dir()
    filenames = _hf_filenames(cfg)
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision or None)
        if isinstance(found, str):
            if cfg.get("custom_load"):
                return {"cache_dir": cache_dir}  # timm's custom loader finds it in the cache itself
            return {"pretrained_cfg_overlay": {"file": found, "source": None}}
    expected = os.path.join(
        cache_dir, f"models--{repo_id.replace('/', '--')}", "snapshots", "<rev>", filenames[0]
    )
    source = f"https://huggingface.co/{repo_id}"
    hint = f"`hf download {repo_id}` on a machine with internet, then copy its HF_HOME cache"
    if hf_offline():
        raise pretrained_unavailable(
            model,
            reason="they are not in the Hugging Face cache and HF_HUB_OFFLINE is set",
            expected=expected,
            source=source,
            fetch_hint=hint,
        )
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    url = hf_hub_url(repo_id, filenames[0], revision=revision or None, endpoint=endpoint)
    try:  # one quick request, no retries: is the Hub reachable at all?
        get_hf_file_metadata(url, timeout=PROBE_TIMEOUT)
    except HfHubHTTPError:
        pass  # the Hub answered; let timm fetch (and choose the file) for real
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise pretrained_unavailable(
            model,
            reason=f"they are not in the Hugging Face cache and the Hub is unreachable ({first})",
            expected=expected,
            source=source,
            fetch_hint=hint,
        ) from None
    return {"cache_dir": cache_dir}
