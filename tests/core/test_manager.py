"""Plugin manager: isolation of broken plugins, strict mode, switches, typo detection."""

from __future__ import annotations

import io

import pytest

from visionkit_core import hookimpl
from visionkit_core.errors import PluginLoadError
from visionkit_core.plugin.manager import BUILTIN_PLUGINS, load_plugins


class GoodPlugin:
    @hookimpl
    def visionkit_register_backbones(self, registry):  # type: ignore[no-untyped-def]
        registry.add("goodnet", "math:sqrt", description="a good net")


class RaisingPlugin:
    @hookimpl
    def visionkit_register_backbones(self, registry):  # type: ignore[no-untyped-def]
        registry.add("halfnet", "math:sqrt")
        raise RuntimeError("registration exploded")


class TypoPlugin:
    @hookimpl
    def visionkit_register_backbone(self, registry):  # type: ignore[no-untyped-def]
        raise AssertionError("never called")


class ClaimingPlugin:
    @hookimpl
    def visionkit_register_backbones(self, registry):  # type: ignore[no-untyped-def]
        registry.add("good:stolen", "math:sqrt")


def test_builtin_plugins_register_through_the_same_hooks() -> None:
    plugins = load_plugins(autoload=False)
    names = {i.name for i in plugins.infos.values() if i.builtin}
    assert names == {m.split(".")[0] for m in BUILTIN_PLUGINS}
    assert not plugins.failed, [i.errors for i in plugins.failed]


def test_a_registration_that_raises_is_recorded_and_skipped() -> None:
    plugins = load_plugins(
        builtins=(), autoload=False, extra=[("good", GoodPlugin()), ("bad", RaisingPlugin())]
    )
    reg = plugins.registry
    assert reg.resolve("backbone", "goodnet").origin.plugin == "good"
    assert [c.name for c in reg.listing("backbone")] == ["goodnet"]  # nothing half-registered
    assert plugins.infos["bad"].status == "failed"
    assert "registration exploded" in plugins.infos["bad"].errors[0]
    out = io.StringIO()
    plugins.report_errors(out)
    plugins.report_errors(out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "'bad'" in lines[0] and "VISIONKIT_STRICT_PLUGINS" in lines[0]


def test_strict_mode_makes_a_failure_fatal() -> None:
    plugins = load_plugins(builtins=(), autoload=False, extra=[("bad", RaisingPlugin())], strict=True)
    with pytest.raises(PluginLoadError) as err:
        plugins.registry  # noqa: B018
    assert "'bad'" in str(err.value)


def test_unknown_hook_is_reported_with_a_suggestion() -> None:
    plugins = load_plugins(builtins=(), autoload=False, extra=[("typo", TypoPlugin())])
    assert "did you mean visionkit_register_backbones" in plugins.infos["typo"].errors[0]


def test_namespace_claimed_by_another_plugin_is_reported() -> None:
    plugins = load_plugins(
        builtins=(), autoload=False, extra=[("good", GoodPlugin()), ("thief", ClaimingPlugin())]
    )
    plugins.registry  # noqa: B018
    assert any("claimed by two distributions" in e for e in plugins.infos["thief"].errors)


def test_blocked_builtin_is_not_loaded() -> None:
    plugins = load_plugins(autoload=False, blocked=["visionkit_timm"])
    assert plugins.infos["visionkit_timm"].status == "disabled"
    assert "timm" not in plugins.registry.namespaces("backbone")


def test_env_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONKIT_STRICT_PLUGINS", "1")
    assert load_plugins(builtins=(), autoload=False).strict is True
    monkeypatch.setenv("VISIONKIT_STRICT_PLUGINS", "0")
    assert load_plugins(builtins=(), autoload=False).strict is False
