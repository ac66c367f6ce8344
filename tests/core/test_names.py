"""Name parsing: ``namespace:name`` split on the first colon."""

from __future__ import annotations

import pytest

from visionkit_core.errors import UsageError
from visionkit_core.plugin.names import ParsedName, parse_name


def test_bare_name_has_no_namespace() -> None:
    assert parse_name("resnet18") == ParsedName(None, "resnet18")


def test_qualified_name_splits_on_first_colon() -> None:
    assert parse_name("timm:hf-hub:org/model") == ParsedName("timm", "hf-hub:org/model")
    assert str(parse_name(" timm:convnext_tiny ")) == "timm:convnext_tiny"


@pytest.mark.parametrize("bad", ["", "a:resnet", "timm:", "1x:foo", ":foo"])
def test_invalid_names_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_name(bad)
