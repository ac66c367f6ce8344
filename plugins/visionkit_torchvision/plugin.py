"""Hook implementations of the built-in visionkit_torchvision plugin.

Registers the ResNet family as built-in backbones (``resnet18`` ... ``resnet152``) and the
dynamic ``torchvision:`` namespace (every torchvision classification model). Factories are
``"module:attr"`` strings, so nothing here imports torch or torchvision.
"""

from __future__ import annotations

from visionkit_core.kit.registration import Entry, Namespace, backbones

_MODULE = "visionkit_torchvision.backbones"
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

visionkit_register_backbones = backbones(
    *(
        Entry(name, f"{_MODULE}:{name}", f"{name.replace('resnet', 'ResNet-')} (torchvision)")
        for name in RESNETS
    ),
    Namespace(
        "torchvision",
        f"{_MODULE}:resolve",
        f"{_MODULE}:list_names",
        "any torchvision classification model, e.g. torchvision:convnext_tiny",
    ),
)
