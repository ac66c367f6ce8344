"""Build components from the registry: resolve a name, check options, call the factory.

Tasks use :func:`build_backbone`, so a checkpoint that names its backbone can rebuild it
(``load_from_checkpoint``) without the caller re-specifying the model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from visionkit_core.plugin.manager import Plugins, get_plugins
from visionkit_core.plugin.registry import Component
from visionkit_core.run.config import check_options

if TYPE_CHECKING:
    from torch import nn

#: Arguments visionkit passes to a backbone factory itself, and the flag that sets each.
BACKBONE_RESERVED = {
    "num_classes": "the dataset's class count",
    "pretrained": "--pretrained",
    "features_only": "the task (feature backbones)",
    "out_indices": "the task (feature backbones)",
}


def call_with_accepted(
    factory: Callable[..., Any], provided: Mapping[str, Any], options: Mapping[str, Any]
) -> Any:
    """Call ``factory(**options, **provided)``, passing only the ``provided`` args it accepts."""
    kwargs = {k: v for k, v in provided.items() if accepts(factory, k)}
    return factory(**{**kwargs, **options})


def accepts(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` takes the keyword argument ``name`` (or any keyword argument)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def resolve(kind: str, name: str, plugins: Plugins | None = None) -> Component:
    """Resolve ``name`` among the components of ``kind`` (errors say what exists)."""
    return (plugins or get_plugins()).registry.resolve(kind, name)


def build_backbone(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    options: Mapping[str, Any] | None = None,
    plugins: Plugins | None = None,
) -> nn.Module:
    """Build the backbone ``name`` with a ``num_classes``-way head."""
    comp = resolve("backbone", name, plugins)
    factory = comp.load()
    opts = check_options("backbone", comp.qualname, factory, dict(options or {}), BACKBONE_RESERVED)
    model = factory(num_classes=num_classes, pretrained=pretrained, **opts)
    model.visionkit_backbone = comp.qualname  # type: ignore[union-attr]
    return model  # type: ignore[no-any-return]
