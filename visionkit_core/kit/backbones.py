"""Feature backbones: multi-scale feature maps from any registered backbone that can give them.

A backbone factory that takes ``features_only`` (the built-in ``timm:*`` and the torchvision
ResNets do; see docs/hooks.md) builds, with ``features_only=True``, a module whose forward maps
``(N, 3, H, W)`` images to a list of ``(N, C_i, H / s_i, W / s_i)`` feature maps and that
declares them in ``visionkit_feature_info`` (:class:`~visionkit_core.FeatureLevel`: channels
``C_i`` and reduction ``s_i``). :func:`build_feature_backbone` resolves the name through the
registry like ``--backbone`` does, checks the user's ``--set backbone.*`` options, loads
``--weights FILE`` into it, and returns the module with its levels::

    features = build_feature_backbone(backbone, pretrained=pretrained, weights=weights,
                                      out_indices=(1, 2), **(backbone_options or {}))
    self.backbone = features.module                 # list of maps in forward
    channels = [level.channels for level in features.levels]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import nn

from visionkit_core import FeatureLevel, UsageError, call_with_accepted, load_weights
from visionkit_core.kit.task import rank_zero_print
from visionkit_core.plugin.contract import FEATURE_INFO


class FeatureBackbone(NamedTuple):
    """What :func:`build_feature_backbone` gives: the module and one level per map it returns."""

    module: nn.Module
    levels: list[FeatureLevel]

    @property
    def channels(self) -> list[int]:
        return [level.channels for level in self.levels]

    @property
    def reductions(self) -> list[int]:
        return [level.reduction for level in self.levels]


def gives_features(factory: Any) -> bool:
    """Whether a backbone factory declares ``features_only`` (can build a feature backbone)."""
    import inspect

    try:
        return "features_only" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def feature_levels(module: nn.Module, name: str = "backbone") -> list[FeatureLevel]:
    """The :class:`FeatureLevel` list ``module`` declares (``visionkit_feature_info``)."""
    declared = getattr(module, FEATURE_INFO, None)
    if not declared:
        raise UsageError(
            f"backbone {name!r} built with features_only=True declares no {FEATURE_INFO} "
            "(a list of {'channels', 'reduction'} per feature map); the backbone's plugin must set it"
        )
    try:
        return [FeatureLevel.of(level) for level in declared]
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(
            f"backbone {name!r}: {FEATURE_INFO} entries need channels and reduction ({err})"
        ) from None


def build_feature_backbone(
    name: str,
    pretrained: bool = False,
    weights: str | None = None,
    out_indices: Sequence[int] | None = None,
    **options: Any,
) -> FeatureBackbone:
    """Build the registered backbone ``name`` as a feature extractor (see the module docstring).

    Args:
        name: a backbone name as ``--backbone`` takes it (``timm:resnet10t``, ``resnet18``).
        pretrained: load its pretrained weights (``--pretrained``; fails clearly offline).
        weights: a local weight file (``--weights FILE``) loaded into the feature module.
        out_indices: which feature levels (the backbone's numbering; ``None``: all).
        options: the backbone's own options (``--set backbone.KEY=VALUE``), checked by name and type.

    Raises :class:`UsageError` when the backbone cannot give feature maps, naming it.
    """
    from visionkit_core.run.build import BACKBONE_RESERVED, resolve
    from visionkit_core.run.config import check_options

    comp = resolve("backbone", name)
    factory = comp.load()
    if not gives_features(factory):
        raise UsageError(
            f"backbone {comp.qualname!r} (plugin {comp.origin.plugin!r}) gives only class logits, not "
            "feature maps (its factory takes no features_only); choose one that does, e.g. timm:resnet10t "
            "or resnet18 (`visionkit models list`)"
        )
    opts = check_options("backbone", comp.qualname, factory, options, BACKBONE_RESERVED)
    provided = {
        "num_classes": 0,
        "pretrained": pretrained,
        "features_only": True,
        "out_indices": tuple(out_indices) if out_indices is not None else None,
    }
    module = call_with_accepted(factory, provided, opts)
    levels = feature_levels(module, comp.qualname)
    if out_indices is not None and len(levels) != len(tuple(out_indices)):
        raise UsageError(
            f"backbone {comp.qualname!r} gave {len(levels)} feature levels "
            f"for out_indices={tuple(out_indices)}"
        )
    module.visionkit_backbone = comp.qualname
    if weights:
        rank_zero_print(f"visionkit: {load_weights(module, weights).summary()}")
    return FeatureBackbone(module, levels)


def check_feature_maps(features: FeatureBackbone, size: int = 64) -> str:
    """One forward of a ``(1, 3, size, size)`` batch: the maps must be the levels declared.

    Raises ``AssertionError`` naming the first difference; returns a one-line summary
    (what ``plugins check`` can report for a backbone that :func:`gives_features`).
    """
    import torch

    with torch.no_grad():
        maps = features.module.eval()(torch.rand(1, 3, size, size))
    if not isinstance(maps, (list, tuple)) or len(maps) != len(features.levels):
        got = f"{len(maps)} maps" if isinstance(maps, (list, tuple)) else type(maps).__name__
        raise AssertionError(f"features_only=True must give a list of {len(features.levels)} maps, got {got}")
    for i, (fmap, level) in enumerate(zip(maps, features.levels, strict=True)):
        expected = size / level.reduction
        if fmap.ndim != 4 or fmap.shape[1] != level.channels or abs(fmap.shape[-1] - expected) > 1:
            raise AssertionError(
                f"feature map {i} is {tuple(fmap.shape)}, but {FEATURE_INFO} declares "
                f"{level.channels} channels at reduction {level.reduction} (about {expected:g} px of {size})"
            )
    shapes = ", ".join(f"{lv.channels}@1/{lv.reduction}" for lv in features.levels)
    return f"(1, 3, {size}, {size}) -> {len(maps)} feature maps: {shapes}"


__all__ = [
    "FeatureBackbone",
    "build_feature_backbone",
    "check_feature_maps",
    "feature_levels",
    "gives_features",
]
