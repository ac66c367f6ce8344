"""Hook implementations of the built-in visionkit_timm plugin.

Registers the dynamic ``timm:`` namespace: every ``timm.list_models()`` name (tagged names
such as ``timm:resnet10t.c3_in1k`` too), listed lazily. Nothing here imports timm.
"""

from __future__ import annotations

from visionkit_core.kit.registration import Namespace, backbones

_MODULE = "visionkit_timm.backbones"

visionkit_register_backbones = backbones(
    Namespace(
        "timm",
        f"{_MODULE}:resolve",
        f"{_MODULE}:list_names",
        "any timm model, e.g. timm:convnext_tiny or timm:resnet10t.c3_in1k",
    ),
)
