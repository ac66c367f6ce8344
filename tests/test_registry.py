"""Registry: resolution, listing, did-you-mean and conflict errors."""

from __future__ import annotations

import pytest

from visionkit_core.errors import AmbiguousNameError, ConflictError, UnknownNameError
from visionkit_core.plugin.registry import Origin, Registrar, Registry

CORE = Origin("core", "visionkit", "0.1.0", builtin=True)
ACME = Origin("acme", "visionkit-acme", "1.2.0")
OTHER = Origin("other", "visionkit-other", "0.3.0")


def make_registry() -> Registry:
    reg = Registry()
    reg.add("backbone", "visionkit", "resnet18", "x:y", CORE)
    reg.add("backbone", "visionkit", "resnet34", "x:y", CORE)
    reg.add("backbone", "acme", "tinynet", lambda **kw: None, ACME)
    return reg


def test_bare_and_qualified_names_resolve() -> None:
    reg = make_registry()
    assert reg.resolve("backbone", "resnet18").qualname == "visionkit:resnet18"
    assert reg.resolve("backbone", "tinynet").origin == ACME
    assert reg.resolve("backbone", "acme:tinynet").name == "tinynet"


def test_unknown_bare_name_suggests_close_matches_and_namespaces() -> None:
    with pytest.raises(UnknownNameError) as err:
        make_registry().resolve("backbone", "resnet19")
    msg = str(err.value)
    assert "resnet18" in msg and "acme" in msg and "visionkit models list" in msg


def test_unknown_namespace_lists_installed_ones() -> None:
    with pytest.raises(UnknownNameError) as err:
        make_registry().resolve("backbone", "acm:tinynet")
    assert "installed backbone namespaces: acme, visionkit" in str(err.value)
    assert "acme:tinynet" in str(err.value)


def test_bare_name_in_two_namespaces_is_ambiguous() -> None:
    reg = make_registry()
    reg.add("backbone", "other", "resnet18", "x:y", OTHER)
    with pytest.raises(AmbiguousNameError) as err:
        reg.resolve("backbone", "resnet18")
    assert "other:resnet18" in str(err.value) and "visionkit:resnet18" in str(err.value)
    assert reg.resolve("backbone", "other:resnet18").origin == OTHER


def test_second_distribution_claiming_a_namespace_is_an_error_naming_both() -> None:
    reg = make_registry()
    with pytest.raises(ConflictError) as err:
        reg.add("backbone", "acme", "bignet", "x:y", OTHER)
    assert "visionkit-acme" in str(err.value) and "visionkit-other" in str(err.value)
    # the conflicted namespace stays an error, never a silent winner
    with pytest.raises(ConflictError):
        reg.resolve("backbone", "acme:tinynet")


def test_duplicate_name_is_an_error_not_an_overwrite() -> None:
    reg = make_registry()
    again = Origin("core2", "visionkit", "0.1.0", builtin=True)
    with pytest.raises(ConflictError) as err:
        reg.add("backbone", "visionkit", "resnet18", "other:factory", again)
    assert "'core'" in str(err.value) and "'core2'" in str(err.value)
    assert reg.resolve("backbone", "resnet18").factory == "x:y"


def test_dynamic_namespace_is_listed_only_on_request() -> None:
    calls: list[str] = []

    def resolve(name: str) -> object:
        calls.append(name)
        return (lambda **kw: name) if name.startswith("net") else None

    def names() -> list[str]:
        calls.append("<list>")
        return ["net_a", "net_b", "other"]

    reg = make_registry()
    reg.add_namespace("backbone", "dyn", resolve, names, ACME)
    assert [c.qualname for c in reg.listing("backbone")] == [
        "acme:tinynet",
        "visionkit:resnet18",
        "visionkit:resnet34",
    ]
    assert calls == []
    assert [c.name for c in reg.listing("backbone", "dyn", "net_*")] == ["net_a", "net_b"]
    assert reg.resolve("backbone", "dyn:net_z").name == "net_z"
    with pytest.raises(UnknownNameError) as err:
        reg.resolve("backbone", "dyn:other_a")
    assert "other" in str(err.value) and "--namespace dyn" in str(err.value)


def test_registrar_commits_nothing_until_the_hook_returns() -> None:
    reg = Registry()
    registrar = Registrar(reg, "dataset", ACME, "acme")
    registrar.add("shapes", "m:f")
    assert reg.static_components("dataset") == []
    assert registrar.commit() == []
    assert reg.resolve("dataset", "shapes").qualname == "acme:shapes"
    assert reg.by_plugin["acme"] == ["dataset acme:shapes"]


def test_listing_filter_matches_name_or_qualname() -> None:
    reg = make_registry()
    assert [c.name for c in reg.listing("backbone", pattern="resnet3*")] == ["resnet34"]
    assert [c.name for c in reg.listing("backbone", pattern="acme:*")] == ["tinynet"]
