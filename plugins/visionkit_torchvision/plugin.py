"""Hook implementations of the built-in visionkit_torchvision plugin.

Registers the ResNet family as built-in backbones (``resnet18`` ... ``resnet152``) and the
dynamic ``torchvision:`` namespace (every torchvision classification model). Factories are
``"module:attr"`` strings, so nothing here imports torch or torchvision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from visionkit_core import Registrar

_MODULE = "visionkit_torchvision.backbones"
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@hookimpl
def visionkit_register_backbones(registry: Registrar) -> None:
    """Register the built-in ResNets and the ``torchvision:`` namespace."""
    for name in RESNETS:
        registry.add(
            name, f"{_MODULE}:{name}", description=f"{name.replace('resnet', 'ResNet-')} (torchvision)"
        )
    registry.add_namespace(
        "torchvision",
        resolve=f"{_MODULE}:resolve",
        list_names=f"{_MODULE}:list_names",
        description="any torchvision classification model, e.g. torchvision:convnext_tiny",
    )
