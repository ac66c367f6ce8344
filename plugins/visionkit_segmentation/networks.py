"""Build segmentation networks by name: smp architectures with an encoder, or torchvision's models.

``arch`` is an smp architecture (``unet``, ``fpn``, ``deeplabv3plus``, ...; any of
``smp.create_model``'s) whose encoder comes from the visionkit ``backbone`` name:
``timm:<name>`` -> smp's ``tu-<name>`` (any timm model with features), ``resnet18`` /
``torchvision:resnet50`` / ``smp:<name>`` -> smp's own encoder of that name. Or ``arch`` is
``tv:<model>`` (``tv:deeplabv3_mobilenet_v3_large``, ``tv:fcn_resnet50``,
``tv:lraspp_mobilenet_v3_large``, ...), whose backbone is fixed by the name.

Every network is wrapped in :class:`SegNet`: it pads the input to a multiple of the network's
stride (zeros, after normalisation) and crops the logits back, so any input size works —
in training, predict and the exported graph (height and width stay dynamic there).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from visionkit_core import ConfigError, UsageError
from visionkit_core.kit.weights import timm_pretrained_kwargs as timm_encoder_kwargs
from visionkit_core.kit.weights import torch_hub_file
from visionkit_segmentation.pretrained import smp_encoder_weights

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
TV_MODELS = (
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "fcn_resnet50",
    "fcn_resnet101",
    "lraspp_mobilenet_v3_large",
)
#: Namespaces whose names are looked up among smp's own encoders.
_SMP_NAMESPACES = ("", "smp", "torchvision", "visionkit", "visionkit_torchvision")


class SegNet(nn.Module):
    """Normalised images ``(N, 3, H, W)`` -> logits ``(N, C, H, W)`` at any ``H, W``."""

    def __init__(self, net: nn.Module, stride: int) -> None:
        super().__init__()
        self.net = net
        self.stride = int(stride)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        s = self.stride
        # always pad (possibly by 0): no branch on the size, so export keeps H and W symbolic
        x = F.pad(x, (0, (s - w % s) % s, 0, (s - h % s) % s))
        return self.net(x)[:, :, :h, :w]


class TorchvisionOutput(nn.Module):
    """A torchvision segmentation model returning its ``"out"`` logits (a tensor, not a dict)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


def smp_archs() -> list[str]:
    import segmentation_models_pytorch as smp

    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def encoder_for(backbone: str) -> str:
    """smp's encoder name for a visionkit backbone name (``timm:convnext_tiny`` -> ``tu-convnext_tiny``)."""
    from segmentation_models_pytorch.encoders import encoders

    ns, _, name = backbone.rpartition(":")
    if ns == "timm":
        import timm

        if not timm.is_model(name.split(".")[0]):
            raise UsageError(f"--backbone {backbone!r}: timm has no model {name!r}")
        return f"tu-{name}"
    if ns in _SMP_NAMESPACES and name in encoders:
        return name
    raise UsageError(
        f"--backbone {backbone!r} cannot be a segmentation encoder: use timm:<model> (any timm model "
        f"with feature maps, e.g. timm:resnet18, timm:convnext_tiny), one of smp's encoders "
        f"(resnet18, resnet34, resnet50, mobilenet_v2, efficientnet-b0, smp:<name>), "
        "or --set task.arch=tv:<model> for torchvision's segmentation models"
    )


def build_network(
    arch: str, backbone: str, num_classes: int, pretrained: bool, options: dict[str, Any]
) -> tuple[SegNet, dict[str, Any]]:
    """The wrapped network and its preprocessing (``mean``/``std``) for ``arch`` and ``backbone``."""
    if arch.startswith("tv:"):
        return _torchvision(arch[3:], num_classes, pretrained, options)
    import segmentation_models_pytorch as smp

    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ConfigError(
            f"--set task.arch={arch}: not an smp architecture ({', '.join(smp_archs())}) "
            f"nor tv:<model> ({', '.join('tv:' + m for m in TV_MODELS)})"
        )
    encoder = encoder_for(backbone)
    kwargs = dict(options)
    weights: Any = None
    preprocessing = dict(IMAGENET)
    if encoder.startswith("tu-"):
        name = encoder[3:]
        preprocessing = _timm_preprocessing(name)
        if pretrained:
            weights = True
            kwargs.update(timm_encoder_kwargs(name))
    elif pretrained:
        weights = smp_encoder_weights(encoder)
    try:
        net = smp.create_model(
            arch, encoder_name=encoder, encoder_weights=weights, classes=num_classes, **kwargs
        )
    except TypeError as err:
        raise ConfigError(
            f"--set backbone.*: {arch} with encoder {encoder} rejects an option: {err}"
        ) from None
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise UsageError(
            f"cannot load pretrained weights for encoder {encoder}: {type(err).__name__}: "
            f"{(str(err).splitlines() or [''])[0]}. Fix: pass --no-pretrained, or --weights FILE"
        ) from None
    stride = int(getattr(net.encoder, "output_stride", 32)) if net.requires_divisible_input_shape else 1
    return SegNet(net, stride), preprocessing


def _timm_preprocessing(name: str) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    data = cfg.to_dict() if cfg is not None else {}  # type: ignore[no-untyped-call]
    mean, std = data.get("mean") or IMAGENET["mean"], data.get("std") or IMAGENET["std"]
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def _torchvision(
    name: str, num_classes: int, pretrained: bool, options: dict[str, Any]
) -> tuple[SegNet, dict[str, Any]]:
    """A torchvision segmentation model; ``pretrained`` loads its ImageNet backbone (not the COCO head)."""
    from torchvision.models import get_model_weights, segmentation

    if name not in TV_MODELS:
        raise ConfigError(f"--set task.arch=tv:{name}: use one of {', '.join('tv:' + m for m in TV_MODELS)}")
    backbone_weights = None
    if pretrained:
        backbone_weights = get_model_weights(name.split("_", 1)[1]).DEFAULT
        torch_hub_file(f"tv:{name} (backbone)", backbone_weights.url)
    kwargs = {"aux_loss": False, **options}
    try:
        net = getattr(segmentation, name)(
            weights=None, weights_backbone=backbone_weights, num_classes=num_classes, **kwargs
        )
    except TypeError as err:
        raise ConfigError(f"--set backbone.*: tv:{name} rejects an option: {err}") from None
    # torchvision's heads upsample to the input size themselves: no stride constraint
    return SegNet(TorchvisionOutput(net), 1), dict(IMAGENET)


def weight_targets(network: SegNet) -> list[nn.Module]:
    """Where ``--weights`` may load: the encoder (or its timm model), then the backbone, then all."""
    net = network.net.model if isinstance(network.net, TorchvisionOutput) else network.net
    found: list[nn.Module] = []
    encoder = getattr(net, "encoder", None) or getattr(net, "backbone", None)
    if isinstance(encoder, nn.Module):
        found.append(encoder)
        inner = getattr(encoder, "model", None)
        if isinstance(inner, nn.Module):
            found.append(inner)
    found.append(net)
    return found


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def probe_output(network: SegNet, size: int = 64) -> tuple[int, ...]:
    """The logits' shape for one ``size``-squared image (a cheap self-check for tests and docs)."""
    was = network.training
    network.eval()
    try:
        return tuple(network(torch.zeros(1, 3, size, size)).shape)
    finally:
        network.train(was)
