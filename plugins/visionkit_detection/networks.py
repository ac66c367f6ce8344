"""Build detectors by name: torchvision's detectors, or a torchvision head over any timm backbone.

``arch`` is either one of torchvision's detectors (:data:`TORCHVISION_DETECTORS`, e.g.
``fasterrcnn_mobilenet_v3_large_320_fpn``; ``tv:`` in front is allowed), whose backbone is fixed
by the name, or a head (:data:`HEADS`: ``fcos``, ``retinanet``, ``fasterrcnn``) put over the
visionkit ``backbone`` ``timm:<name>``: timm's ``features_only`` feature maps (the last three
levels, normally strides 8, 16 and 32) -> torchvision's ``FeaturePyramidNetwork`` -> the head.

Images reach every detector already letterboxed to the run's square size (the datamodule does
it), so torchvision's own resize is switched off (:class:`KeepSize`); its normalisation stays.
Two-stage and SSD detectors number classes from 1 (0 is their background class);
FCOS and RetinaNet score each class with its own sigmoid and need no background:
:func:`label_offset` says which, and the task adds and removes that offset.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from visionkit_core import ConfigError, UsageError
from visionkit_core.kit.weights import timm_pretrained_kwargs, torch_hub_file

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
#: torchvision detector -> its family (which head; what export can do).
TORCHVISION_DETECTORS = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": "fasterrcnn",
    "fasterrcnn_mobilenet_v3_large_fpn": "fasterrcnn",
    "fasterrcnn_resnet50_fpn": "fasterrcnn",
    "fasterrcnn_resnet50_fpn_v2": "fasterrcnn",
    "fcos_resnet50_fpn": "fcos",
    "retinanet_resnet50_fpn": "retinanet",
    "retinanet_resnet50_fpn_v2": "retinanet",
    "ssd300_vgg16": "ssd",
    "ssdlite320_mobilenet_v3_large": "ssd",
}
HEADS = ("fcos", "retinanet", "fasterrcnn")
#: Families whose inference graph torch can export (single-stage heads, see export.py).
EXPORTABLE_FAMILIES = ("fcos", "retinanet")


class KeepSize(GeneralizedRCNNTransform):
    """torchvision's detection transform without its resize: normalise and batch only."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, Any]:
        return image, target


class TimmFPN(nn.Module):
    """timm ``features_only`` feature maps -> FPN: an ``OrderedDict`` of ``out_channels`` maps."""

    def __init__(
        self, name: str, out_channels: int, pretrained: bool, extra: str, options: dict[str, Any]
    ) -> None:
        super().__init__()
        import timm
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

        kwargs = dict(options)
        if pretrained:
            kwargs.update(timm_pretrained_kwargs(name))
        try:
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True, **kwargs)
        except TypeError as err:
            raise ConfigError(f"--set backbone: timm:{name} does not accept an option given: {err}") from None
        except RuntimeError as err:
            if "features_only" in str(err) or "feature" in str(err).lower():
                raise UsageError(f"timm:{name} cannot give feature maps (features_only): {err}") from None
            raise
        info = self.body.feature_info
        reductions = list(info.reduction())
        wanted = [i for i, r in enumerate(reductions) if r in (8, 16, 32)]
        self.levels = wanted if len(wanted) == 3 else list(range(len(reductions)))[-3:]
        self.strides = [int(reductions[i]) for i in self.levels]
        channels = [int(info.channels()[i]) for i in self.levels]
        blocks: Any = None
        if extra == "p6p7":
            blocks = LastLevelP6P7(out_channels, out_channels)
            self.strides += [self.strides[-1] * 2, self.strides[-1] * 4]
        elif extra == "pool":
            blocks = LastLevelMaxPool()
            self.strides += [self.strides[-1] * 2]
        self.channels = channels
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=blocks)
        self.out_channels = out_channels
        self.preprocessing = _timm_preprocessing(self.body)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.body(x)
        maps = OrderedDict()
        for i, level in enumerate(self.levels):
            f = feats[level]
            if f.shape[1] != self.channels[i] and f.shape[-1] == self.channels[i]:
                f = f.permute(0, 3, 1, 2)  # channels-last feature maps (Swin and other transformers)
            maps[str(i)] = f
        return self.fpn(maps)


def _timm_preprocessing(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return {
        "mean": [float(v) for v in cfg.get("mean") or IMAGENET["mean"]],
        "std": [float(v) for v in cfg.get("std") or IMAGENET["std"]],
    }


def family_of(arch: str) -> str:
    """``fcos``, ``retinanet``, ``fasterrcnn`` or ``ssd`` for a head or torchvision detector name."""
    name = arch.removeprefix("tv:")
    if name in HEADS:
        return name
    if name in TORCHVISION_DETECTORS:
        return TORCHVISION_DETECTORS[name]
    raise ConfigError(
        f"--set task.arch={arch}: not a detector; use a head over --backbone ({', '.join(HEADS)}) or one "
        f"of torchvision's detectors: {', '.join(TORCHVISION_DETECTORS)}"
    )


def label_offset(family: str) -> int:
    """1 where the detector reserves class 0 for background (Faster R-CNN, SSD), else 0."""
    return 1 if family in ("fasterrcnn", "ssd") else 0


def timm_name(backbone: str, arch: str) -> str:
    """The timm model of ``timm:<name>``; any other backbone name is refused, saying what works."""
    ns, _, name = backbone.rpartition(":")
    if ns == "timm":
        import timm

        if not timm.is_model(name.split(".")[0]):
            raise UsageError(f"--backbone {backbone!r}: timm has no model {name!r}")
        return name
    raise UsageError(
        f"--backbone {backbone!r} cannot go under a {arch} head: use timm:<model> (any timm model with "
        "feature maps, e.g. timm:resnet18, timm:convnext_tiny, timm:mobilenetv3_large_100), or "
        f"--set task.arch=<detector> for one of torchvision's: {', '.join(TORCHVISION_DETECTORS)}"
    )


def build_detector(
    arch: str,
    backbone: str,
    num_classes: int,
    pretrained: bool,
    *,
    fpn_channels: int,
    head_convs: int,
    extra_levels: bool,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
    backbone_options: dict[str, Any],
    detector_options: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The detector for ``num_classes`` object classes and its ``mean``/``std``.

    ``detector_options`` are handed to torchvision's constructor as they are (e.g.
    ``box_batch_size_per_image``, ``rpn_post_nms_top_n_train``, ``topk_candidates``,
    ``center_sampling_radius``); one it does not take is a ConfigError.
    """
    family = family_of(arch)
    outputs = num_classes + label_offset(family)
    common = {
        "score_thresh": score_thresh,
        "nms_thresh": nms_thresh,
        "detections_per_img": detections_per_img,
    }
    name = arch.removeprefix("tv:")
    if name in TORCHVISION_DETECTORS:
        if backbone_options:
            raise ConfigError(
                f"--set backbone.*: {name} brings its own backbone; set detector options with --set task.*"
            )
        model = _with_options(_torchvision, name, outputs, pretrained, family, common, detector_options)
    else:
        extra = (
            "p6p7" if extra_levels and family != "fasterrcnn" else "pool" if family == "fasterrcnn" else ""
        )
        body = TimmFPN(timm_name(backbone, arch), fpn_channels, pretrained, extra, backbone_options)
        model = _with_options(_head, family, body, outputs, head_convs, common, detector_options)
    mean, std = list(model.transform.image_mean), list(model.transform.image_std)  # type: ignore[union-attr]
    model.transform = KeepSize(1, 1, mean, std)  # the data is already letterboxed
    return model, {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def detector_option_names(family: str) -> list[str]:
    """The keyword arguments torchvision's detector class of ``family`` (and its transform) take."""
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.ssd import SSD

    cls = {"fcos": FCOS, "retinanet": RetinaNet, "fasterrcnn": FasterRCNN, "ssd": SSD}[family]
    names = set(inspect.signature(cls.__init__).parameters) | set(
        inspect.signature(GeneralizedRCNNTransform.__init__).parameters
    )
    managed = set(
        "self backbone num_classes kwargs min_size max_size image_mean image_std anchor_generator "
        "rpn_anchor_generator head box_roi_pool size fixed_size".split()
    )  # what build_detector sets itself
    return sorted(names - managed)


def _with_options(build: Any, *args: Any) -> nn.Module:
    """``build(*args)`` with the last argument (``detector_options``) merged into the one before it.

    torchvision's constructors swallow unknown keywords (``**kwargs`` reach the transform, which
    ignores them), so the names are checked here against what the detector class declares.
    """
    *head, common, options = args
    family = head[0] if head[0] in HEADS else TORCHVISION_DETECTORS[head[0]]
    allowed = detector_option_names(family)
    unknown = [k for k in dict(options or {}) if k not in allowed]
    if unknown:
        raise ConfigError(
            f"--set task.detector_options: {family} detectors take no {', '.join(map(repr, unknown))}; "
            f"they take: {', '.join(allowed)}"
        )
    return build(*head, {**common, **dict(options or {})})  # type: ignore[no-any-return]


def _head(family: str, body: TimmFPN, num_classes: int, head_convs: int, common: dict[str, Any]) -> nn.Module:
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops import MultiScaleRoIAlign

    pre = body.preprocessing
    size = {"min_size": 1, "max_size": 1, "image_mean": pre["mean"], "image_std": pre["std"]}
    strides = body.strides
    channels = body.out_channels
    if family == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        head = FCOSHead(channels, 1, num_classes, num_convs=head_convs)
        return FCOS(body, num_classes, anchor_generator=anchors, head=head, **size, **common)
    if family == "retinanet":
        sizes = tuple(tuple(int(4 * s * 2 ** (k / 3)) for k in range(3)) for s in strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
        head = RetinaNetHead(channels, 9, num_classes)
        if head_convs != 4:
            head = _retina_head(channels, num_classes, head_convs)
        return RetinaNet(body, num_classes, anchor_generator=anchors, head=head, **size, **common)
    sizes = tuple((4 * s,) for s in strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
    names = [str(i) for i in range(len(strides) - 1)]  # the pooled extra level is for the RPN only
    pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
    return FasterRCNN(
        body, num_classes, rpn_anchor_generator=anchors, box_roi_pool=pool, **size, **rcnn(common)
    )


def rcnn(common: dict[str, Any]) -> dict[str, Any]:
    """Faster R-CNN's names for the postprocessing options (``box_`` in front); the rest as they are."""
    renamed = {"score_thresh", "nms_thresh", "detections_per_img"}
    return {(f"box_{k}" if k in renamed else k): v for k, v in common.items()}


def _retina_head(channels: int, num_classes: int, convs: int) -> nn.Module:
    """RetinaNet's head with ``convs`` conv layers per tower instead of 4 (GroupNorm, as in v2)."""
    from functools import partial

    from torchvision.models.detection.retinanet import RetinaNetHead

    head = RetinaNetHead(channels, 9, num_classes, norm_layer=partial(nn.GroupNorm, 32))
    for tower in (head.classification_head.conv, head.regression_head.conv):
        del tower[convs:]
    return head


def _torchvision(
    name: str, num_classes: int, pretrained: bool, family: str, common: dict[str, Any]
) -> nn.Module:
    import torchvision

    builder = torchvision.models.get_model_builder(name)
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes, "weights_backbone": None}
    if pretrained:
        default = inspect.signature(builder).parameters["weights_backbone"].default
        if default is None:
            raise UsageError(f"{name} has no pretrained backbone weights; pass --no-pretrained")
        torch_hub_file(f"{name} (backbone {default})", str(default.url))
        kwargs["weights_backbone"] = default
    kwargs.update(rcnn(common) if family == "fasterrcnn" else common)
    try:
        return builder(**kwargs)  # type: ignore[no-any-return]
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(
            f"cannot load pretrained backbone weights for {name}: {first}. Fix: pass --no-pretrained, "
            "or --weights FILE"
        ) from None


def weight_targets(model: nn.Module) -> list[nn.Module]:
    """Where a ``--weights`` file may fit: the whole detector, its backbone, the backbone's trunk."""
    targets = [model]
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        targets.append(backbone)
        body = getattr(backbone, "body", None)
        if isinstance(body, nn.Module):
            targets.append(body)
    return targets
