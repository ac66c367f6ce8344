"""Registry: resolution, listing, did-you-mean and conflict errors."""

from __future__ import annotations

import pytest

from visionkit_core.errors import AmbiguousNameError, ConflictError, UnknownNameError, UsageError
from visionkit_core.plugin.registry import (
    ComponentLoadError,
    Origin,
    PluginUnavailableError,
    Registrar,
    Registry,
)

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


def test_a_factory_string_naming_a_missing_attribute_is_a_usage_error_naming_plugin_and_string() -> None:
    reg = Registry()
    reg.add("backbone", "acme", "tinynet", "json.decoder:nope", ACME)
    with pytest.raises(ComponentLoadError) as err:
        reg.resolve("backbone", "acme:tinynet").load()
    assert str(err.value) == (
        "backbone 'acme:tinynet' from plugin 'acme' (visionkit-acme 1.2.0): cannot import "
        "'json.decoder:nope': AttributeError: module 'json.decoder' has no attribute 'nope'"
    )
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2
    assert isinstance(err.value.__cause__, AttributeError)


def test_a_factory_string_naming_a_missing_module_or_no_callable_is_reported() -> None:
    reg = Registry()
    reg.add("task", "acme", "gone", "acme_not_installed.tasks:Task", ACME)
    reg.add("task", "acme", "constant", "math:pi", ACME)
    with pytest.raises(ComponentLoadError) as gone:
        reg.resolve("task", "acme:gone").load()
    assert "cannot import 'acme_not_installed.tasks:Task': ModuleNotFoundError" in str(gone.value)
    with pytest.raises(ComponentLoadError) as constant:
        reg.resolve("task", "acme:constant").load()
    assert str(constant.value).endswith("(visionkit-acme 1.2.0): 'math:pi' is a float, not a callable")
    assert reg.resolve("task", "acme:gone").factory == "acme_not_installed.tasks:Task"  # resolving is lazy


def test_a_namespace_resolver_that_cannot_be_imported_or_raises_names_its_plugin() -> None:
    def exploding(name: str) -> object:
        raise RuntimeError("index corrupt")

    reg = Registry()
    reg.add_namespace("backbone", "dyn", "json:no_such_resolver", None, ACME)
    reg.add_namespace("backbone", "boom", exploding, None, OTHER)
    with pytest.raises(ComponentLoadError) as err:
        reg.resolve("backbone", "dyn:net")
    assert str(err.value).startswith(
        "backbone 'dyn:net' from plugin 'acme' (visionkit-acme 1.2.0): cannot import"
    )
    with pytest.raises(ComponentLoadError) as err:
        reg.resolve("backbone", "boom:net")
    assert "plugin 'other' (visionkit-other 0.3.0)" in str(err.value)
    assert "raised RuntimeError: index corrupt" in str(err.value)


def test_a_name_in_the_namespace_of_a_plugin_that_did_not_load_says_so() -> None:
    reg = make_registry()
    cause = ImportError("No module named 'torch_acme'")
    reg.mark_unavailable(
        "broken", "broken", "plugin 'broken' (visionkit-broken 1.0) is installed but failed", cause
    )
    reg.mark_unavailable("acme", "acme", "never shown: acme is loaded")
    with pytest.raises(PluginUnavailableError) as err:
        reg.resolve("backbone", "broken:net")
    assert str(err.value) == (
        "backbone 'broken:net' is unavailable: plugin 'broken' (visionkit-broken 1.0) is installed but failed"
    )
    assert err.value.__cause__ is cause and err.value.exit_code == 2
    assert reg.resolve("backbone", "acme:tinynet").origin == ACME  # a namespace that loaded is never marked
    with pytest.raises(PluginUnavailableError):
        reg.listing("backbone", "broken")
    with pytest.raises(UnknownNameError) as unknown:
        reg.resolve("backbone", "brokennet")
    assert "Installed plugins that did not load may provide it: 'broken'" in str(unknown.value)
    assert "broken" not in reg.namespaces("backbone")


def test_a_builtin_namespace_refuses_a_third_party_and_keeps_working() -> None:
    reg = make_registry()
    with pytest.raises(ConflictError) as err:
        reg.add("backbone", "visionkit", "resnet50", "x:y", ACME)
    assert "belongs to the built-in plugin 'core'" in str(err.value) and "visionkit-acme" in str(err.value)
    assert reg.resolve("backbone", "visionkit:resnet18").origin == CORE
