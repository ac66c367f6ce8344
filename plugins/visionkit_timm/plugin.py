"""Hook implementations of the built-in visionkit_timm plugin.

Registers the dynamic ``timm:`` namespace: every ``timm.list_models()`` name (tagged names
such as ``timm:resnet10t.c3_in1k`` too), listed lazily. Nothing here imports timm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionkit_core import hookimpl

if TYPE_CHECKING:
    from visionkit_core import Registrar

_MODULE = "visionkit_timm.backbones"


@hookimpl
def visionkit_register_backbones(registry: Registrar) -> None:
    """Register the ``timm:`` namespace."""
    registry.add_namespace(
        "timm",
        resolve=f"{_MODULE}:resolve",
        list_names=f"{_MODULE}:list_names",
        description="any timm model, e.g. timm:convnext_tiny or timm:resnet10t.c3_in1k",
    )
