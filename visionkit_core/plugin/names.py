"""Parse ``namespace:name`` component names (split on the first colon, like timm)."""

from __future__ import annotations

import re
from typing import NamedTuple

from visionkit_core.errors import UsageError

_NS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]+$")


class ParsedName(NamedTuple):
    """A component name: ``namespace`` is ``None`` for a bare name."""

    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.name}" if self.namespace else self.name


def parse_name(text: str) -> ParsedName:
    """Split ``"ns:name"`` on the first colon (the name keeps further colons); ``"name"`` has no namespace.

    A namespace has 2+ characters (so ``C:`` never is one): letters, digits, ``_``, ``-`` and ``.``.
    """
    text = text.strip()
    if not text:
        raise UsageError("empty component name: give a name like 'resnet18' or 'timm:convnext_tiny'")
    ns, sep, rest = text.partition(":")
    if not sep:
        return ParsedName(None, text)
    if not _NS_RE.match(ns):
        raise UsageError(
            f"invalid namespace {ns!r} in {text!r}: a namespace has 2+ characters "
            "(letters, digits, '_', '-', '.'), e.g. 'timm:resnet50'"
        )
    if not rest:
        raise UsageError(f"missing name after {ns!r}: write '{ns}:<name>'")
    return ParsedName(ns, rest)
