"""torchvision classification networks as visionkit backbones (built-in ResNets and ``torchvision:*``).

Pretrained weights go through torchvision's own weights API (``get_model_weights(name).DEFAULT``):
1000-class ImageNet weights are loaded, then the classifier head is replaced when
``num_classes`` differs. Offline, a missing file fails in seconds with a :class:`UsageError`
saying where the file is expected and how to proceed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from visionkit_core import UsageError, pretrained_unavailable, probe_url, torch_hub_checkpoint

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
#: Networks that return auxiliary outputs in training mode unless told otherwise.
_AUX_LOGITS = ("googlenet", "inception_v3")


def _resnet(
    arch: str,
    num_classes: int,
    pretrained: bool,
    zero_init_residual: bool,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> nn.Module:
    extra = {"zero_init_residual": zero_init_residual}
    if features_only:
        return build_resnet_features(arch, pretrained=pretrained, out_indices=out_indices, extra=extra)
    return build_torchvision_model(arch, num_classes=num_classes, pretrained=pretrained, extra=extra)


def resnet18(
    *,
    num_classes: int = 0,
    pretrained: bool = False,
    zero_init_residual: bool = False,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> nn.Module:
    """ResNet-18 (torchvision); ``zero_init_residual`` zero-inits each block's last BN."""
    return _resnet("resnet18", num_classes, pretrained, zero_init_residual, features_only, out_indices)


def resnet34(
    *,
    num_classes: int = 0,
    pretrained: bool = False,
    zero_init_residual: bool = False,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> nn.Module:
    """ResNet-34 (torchvision); ``zero_init_residual`` zero-inits each block's last BN."""
    return _resnet("resnet34", num_classes, pretrained, zero_init_residual, features_only, out_indices)


def resnet50(
    *,
    num_classes: int = 0,
    pretrained: bool = False,
    zero_init_residual: bool = False,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> nn.Module:
    """ResNet-50 (torchvision); ``zero_init_residual`` zero-inits each block's last BN."""
    return _resnet("resnet50", num_classes, pretrained, zero_init_residual, features_only, out_indices)


def resnet101(
    *,
    num_classes: int = 0,
    pretrained: bool = False,
    zero_init_residual: bool = False,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> nn.Module:
    """ResNet-101 (torchvision); ``zero_init_residual`` zero-inits each block's last BN."""
    return _resnet("resnet101", num_classes, pretrained, zero_init_residual, features_only, out_indices)


def resnet152(
    *,
    num_classes: int = 0,
    pretrained: bool = False,
    zero_init_residual: bool = False,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> nn.Module:
    """ResNet-152 (torchvision); ``zero_init_residual`` zero-inits each block's last BN."""
    return _resnet("resnet152", num_classes, pretrained, zero_init_residual, features_only, out_indices)


# -- the dynamic ``torchvision:`` namespace ---------------------------------------------


def list_names() -> list[str]:
    """Every classification model torchvision provides (``list_models(module=torchvision.models)``)."""
    import torchvision.models

    return list(torchvision.models.list_models(module=torchvision.models))


def resolve(name: str) -> Callable[..., Any] | None:
    """The factory for ``torchvision:<name>``, or ``None`` when torchvision has no such classifier."""
    if name in RESNETS:
        return globals()[name]  # type: ignore[no-any-return]
    if name not in list_names():
        return None

    if name.startswith(RESNET_LIKE):

        def features_factory(
            *,
            num_classes: int = 0,
            pretrained: bool = False,
            features_only: bool = False,
            out_indices: tuple[int, ...] | None = None,
        ) -> nn.Module:
            if features_only:
                return build_resnet_features(name, pretrained=pretrained, out_indices=out_indices)
            return build_torchvision_model(name, num_classes=num_classes, pretrained=pretrained)

        chosen: Callable[..., Any] = features_factory
    else:

        def factory(*, num_classes: int, pretrained: bool = False) -> nn.Module:
            return build_torchvision_model(name, num_classes=num_classes, pretrained=pretrained)

        chosen = factory
    chosen.__name__ = chosen.__qualname__ = name
    chosen.__doc__ = f"torchvision classification model {name!r}."
    return chosen


# -- feature maps (ResNet-like networks) ------------------------------------------------

#: torchvision networks with ResNet's stem and ``layer1``..``layer4`` (feature levels as timm's:
#: stem at stride 2, then strides 4, 8, 16, 32).
RESNET_LIKE = ("resnet", "resnext", "wide_resnet")
_LEVELS = ("relu", "layer1", "layer2", "layer3", "layer4")


def build_resnet_features(
    name: str,
    *,
    pretrained: bool = False,
    out_indices: tuple[int, ...] | None = None,
    extra: dict[str, Any] | None = None,
) -> nn.Module:
    """The feature maps of ResNet-like ``name`` (torchvision's ``IntermediateLayerGetter``), as a list.

    Levels are numbered as timm numbers them (0: the stem at stride 2, 1-4: ``layer1``-``layer4``
    at strides 4-32); ``out_indices`` picks some (``None``: all). The module's parameter names are
    the classifier's (without ``fc``), so ``--weights`` of the classifier load into it.
    """
    from torchvision.models._utils import IntermediateLayerGetter

    from visionkit_core import FeatureLevel

    indices = tuple(range(len(_LEVELS))) if out_indices is None else tuple(out_indices)
    bad = [i for i in indices if not 0 <= i < len(_LEVELS)]
    if bad or not indices:
        raise UsageError(
            f"torchvision:{name} gives feature levels 0-{len(_LEVELS) - 1} (0: stem, 1-4: layer1-layer4); "
            f"out_indices={indices} is not among them"
        )
    model = build_torchvision_model(name, num_classes=1000, pretrained=pretrained, extra=extra)

    class ResNetFeatures(IntermediateLayerGetter):  # type: ignore[misc]
        def forward(self, x: Any) -> list[Any]:  # the contract: a list, not a dict
            return list(super().forward(x).values())

    levels = [_LEVELS[i] for i in indices]
    getter = ResNetFeatures(model, return_layers={level: level for level in levels})
    info = []
    for level in levels:
        if level == "relu":
            info.append(FeatureLevel(channels=int(model.bn1.num_features), reduction=2))
            continue
        last = getattr(model, level)[-1]
        norm = getattr(last, "bn3", None) or last.bn2  # Bottleneck or BasicBlock
        info.append(FeatureLevel(channels=int(norm.num_features), reduction=2 ** (int(level[-1]) + 1)))
    getter.visionkit_feature_info = info
    getter.visionkit_preprocessing = model.visionkit_preprocessing
    return getter  # type: ignore[no-any-return]


# -- building -------------------------------------------------------------------------


def build_torchvision_model(
    name: str, *, num_classes: int, pretrained: bool = False, extra: dict[str, Any] | None = None
) -> nn.Module:
    """Build torchvision model ``name`` with a ``num_classes``-way head, optionally pretrained."""
    import torchvision.models as tvm

    kwargs = dict(extra or {})
    if pretrained:
        weights = default_weights(name)
        _ensure_cached(f"torchvision:{name}", weights)
        pretrained_classes = len(weights.meta["categories"])
        if name in _AUX_LOGITS:  # as torchvision builds them for its weights, aux heads included
            kwargs.setdefault("aux_logits", True)
            kwargs.setdefault("init_weights", False)
            if name == "inception_v3":
                kwargs.setdefault("transform_input", True)
        try:
            # built empty, then loaded with weights_only=True: torchvision's own
            # get_model(weights=...) unpickles the cached file with weights_only=False
            model = tvm.get_model(name, weights=None, num_classes=pretrained_classes, **kwargs)
            state = weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
            model.load_state_dict(state)
        except Exception as err:  # a download or a cached file that went wrong half-way
            raise pretrained_unavailable(
                f"torchvision:{name}",
                reason=f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}",
                expected=str(torch_hub_checkpoint(weights.url)),
                source=weights.url,
            ) from None
        if num_classes != pretrained_classes:
            replace_head(model, pretrained_classes, num_classes)
    else:
        if name in _AUX_LOGITS:  # the backbone contract is one logits tensor, in training too
            kwargs.update(aux_logits=False, init_weights=True)
        model = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    _drop_aux_heads(model)
    model.visionkit_preprocessing = preprocessing_for(name)  # type: ignore[assignment]
    return model  # type: ignore[no-any-return]


def _drop_aux_heads(model: nn.Module) -> None:
    """Pretrained GoogLeNet/Inception keep auxiliary heads (training-only outputs); drop them."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False  # type: ignore[assignment]
        for attr in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, attr):
                setattr(model, attr, None)


def default_weights(name: str) -> Any:
    """torchvision's recommended weights enum member for ``name``."""
    import torchvision.models as tvm

    try:
        return tvm.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError) as err:
        raise UsageError(
            f"torchvision:{name} has no pretrained weights ({err}); use --no-pretrained"
        ) from None


def _ensure_cached(model: str, weights: Any) -> None:
    """Fail fast, with a useful message, when the weight file is not cached and the net is down."""
    path = torch_hub_checkpoint(weights.url)
    if path.is_file():
        return
    reason = probe_url(weights.url)
    if reason is not None:
        raise pretrained_unavailable(
            model,
            reason=f"{weights} is not in the torch hub cache and {reason}",
            expected=str(path),
            source=weights.url,
            fetch_hint="download that URL on a machine with internet and copy it",
        )


def replace_head(model: nn.Module, old_classes: int, num_classes: int) -> None:
    """Swap every layer producing ``old_classes`` outputs for a fresh ``num_classes`` one.

    torchvision heads live under different names (``fc``, ``classifier[-1]``, ``heads.head``,
    SqueezeNet's 1x1 conv); the layer mapping to the class count is the head wherever it is.
    """
    from torch import nn

    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            new: nn.Module | None = None
            if isinstance(child, nn.Linear) and child.out_features == old_classes:
                new = nn.Linear(child.in_features, num_classes, bias=child.bias is not None)
            elif isinstance(child, nn.Conv2d) and child.out_channels == old_classes:
                new = nn.Conv2d(child.in_channels, num_classes, kernel_size=1)  # SqueezeNet's 1x1 head
            if new is not None:
                setattr(parent, child_name, new)
                replaced += 1
    if not replaced:
        raise UsageError(
            f"could not find the {old_classes}-class head of {type(model).__name__} "
            f"to resize it to {num_classes} classes"
        )


def preprocessing_for(name: str) -> dict[str, Any]:
    """Input preprocessing the model expects: ImageNet mean/std, resize/crop of its default weights."""
    pre: dict[str, Any] = {
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "interpolation": "bilinear",
        "crop_pct": 0.875,
    }
    try:
        weights = default_weights(name)
    except UsageError:
        return pre
    kw = getattr(weights.transforms, "keywords", {}) or {}
    crop, resize = kw.get("crop_size", 224), kw.get("resize_size", 256)
    crop = crop[0] if isinstance(crop, (list, tuple)) else crop
    resize = resize[0] if isinstance(resize, (list, tuple)) else resize
    pre["crop_pct"] = round(float(crop) / float(resize), 4)
    interp = getattr(kw.get("interpolation"), "value", "bilinear")
    pre["interpolation"] = "bicubic" if interp == "bicubic" else "bilinear"
    return pre
