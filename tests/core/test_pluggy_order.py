"""Hooks are called through pluggy: tryfirst, trylast and wrappers keep their documented meaning.

pluggy's documented call order (pytest's "hook function ordering"): a wrapper runs up to
its ``yield`` first, then the ``tryfirst`` implementations, the unmarked ones and the
``trylast`` ones (LIFO by registration within each group), then the wrapper after its
``yield``; ``firstresult`` hooks stop at the first non-``None`` answer. Isolation works
inside that loop: a plugin's own error is named and skipped, an error raised by what a
wrapper wraps passes through the wrapper unattributed.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Callable, Generator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest
import typer
from typer.testing import CliRunner

from visionkit_core import hookimpl
from visionkit_core.errors import PluginLoadError
from visionkit_core.plugin.contract import TaskSpec
from visionkit_core.plugin.manager import Plugins, load_plugins
from visionkit_core.run.config import RunConfig

Log = list[str]
TASK = TaskSpec(name="classification", monitor="val/acc")


def plain(log: Log, name: str, answer: Any = None, **opts: bool) -> Callable[[], Any]:
    """An implementation (of any hook: it takes none of the arguments) that logs its name."""

    def impl() -> Any:
        log.append(name)
        return answer

    return hookimpl(**opts)(impl)


def raising(log: Log, name: str, **opts: bool) -> Callable[[], Any]:
    def impl() -> Any:
        log.append(name)
        raise RuntimeError(f"{name} exploded")

    return hookimpl(**opts)(impl)


def wrapper(
    log: Log, name: str, replace: Callable[[Any], Any] | None = None, **opts: bool
) -> Callable[[], Any]:
    """A new-style wrapper that logs both sides of its ``yield`` (and may replace the result)."""

    def impl() -> Generator[None, Any, Any]:
        log.append(f"{name}: before yield")
        result = yield
        log.append(f"{name}: after yield")
        return replace(result) if replace else result

    return hookimpl(wrapper=True, **opts)(impl)


def load(*plugins: tuple[str, dict[str, Any]]) -> Plugins:
    """Plugins registered in the order given, as third-party ones (no built-ins)."""
    return load_plugins(
        builtins=(), autoload=False, extra=[(name, SimpleNamespace(**hooks)) for name, hooks in plugins]
    )


# -- a real run: three installed plugins around visionkit_configure_trainer ------------------

_ORDER_PRELUDE = """\
import os
from visionkit_core import hookimpl

def log(line):
    with open(os.environ["VKORDER"], "a", encoding="utf-8") as f:
        f.write(line + "\\n")
"""

ORDER_PLUGINS = {
    "wrapping": """
@hookimpl(wrapper=True)
def visionkit_configure_trainer(trainer_kwargs, run):
    log("wrapper: before yield")
    result = yield
    log("wrapper: after yield, max_epochs=%s" % trainer_kwargs["max_epochs"])
    return result
""",
    "first": """
@hookimpl(tryfirst=True)
def visionkit_configure_trainer(trainer_kwargs, run):
    log("tryfirst: epochs=%s" % run.epochs)
""",
    "last": """
@hookimpl(trylast=True)
def visionkit_configure_trainer(trainer_kwargs):
    log("trylast")
""",
}


def install(site: Path, name: str, body: str) -> None:
    """Write plugin ``name`` as the installed distribution ``vkorder-<name> 1.0``."""
    module = f"vkorder_{name}"
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(_ORDER_PRELUDE + body, encoding="utf-8")
    info = site / f"vkorder_{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vkorder-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[visionkit]\n{name} = {module}\n")


@pytest.mark.slow
def test_a_real_train_calls_configure_trainer_in_pluggys_documented_order(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    for name, body in ORDER_PLUGINS.items():
        install(site, name, body)
    order = tmp_path / "order.txt"
    args = ["train", "--epochs", "1", "--image-size", "16"]
    args += ["--set", "trainer.limit_train_batches=2", "--set", "trainer.limit_val_batches=1"]
    env = {"PYTHONPATH": str(site), "VKORDER": str(order), "VISIONKIT_STRICT_PLUGINS": "1"}
    out = run_cli(args, env={**env, "VISIONKIT_PLUGINS": "", "VISIONKIT_DISABLE_PLUGIN_AUTOLOAD": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    assert order.read_text().splitlines() == [
        "wrapper: before yield",
        "tryfirst: epochs=1",
        "trylast",
        "wrapper: after yield, max_epochs=1",
    ]


# -- in process: the calling order of every other hook ------------------------------------


def test_configure_trainer_runs_lifo_within_tryfirst_plain_and_trylast_inside_the_wrappers() -> None:
    log: Log = []
    hook = "visionkit_configure_trainer"
    plugins = load(
        ("plain1", {hook: plain(log, "plain1")}),
        ("last", {hook: plain(log, "trylast", trylast=True)}),
        ("wrap_outer", {hook: wrapper(log, "tryfirst wrapper", tryfirst=True)}),
        ("plain2", {hook: plain(log, "plain2")}),
        ("first", {hook: plain(log, "tryfirst", tryfirst=True)}),
        ("wrap_inner", {hook: wrapper(log, "wrapper")}),
    )
    plugins.configure_trainer({"callbacks": []}, RunConfig())
    assert log == [
        "tryfirst wrapper: before yield",
        "wrapper: before yield",
        "tryfirst",
        "plain2",  # registered after plain1: called first (LIFO)
        "plain1",
        "trylast",
        "wrapper: after yield",
        "tryfirst wrapper: after yield",
    ]


def test_registration_hooks_run_in_pluggy_order_but_commit_in_registration_order() -> None:
    log: Log = []

    def registering(name: str, **opts: bool) -> Callable[..., None]:
        def impl(registry: Any) -> None:
            log.append(f"{name} as {registry.origin.plugin}")
            registry.add("dup:net", "math:sqrt")

        return hookimpl(**opts)(impl)

    @hookimpl(wrapper=True)
    def wrapping(registry: Any) -> Generator[None, None, None]:
        log.append(f"wrapper before yield as {registry.origin.plugin}")
        yield
        registry.add("wrapped", "math:sqrt")
        log.append("wrapper after yield")

    hook = "visionkit_register_backbones"
    plugins = load(
        ("early", {hook: registering("early")}),
        ("late", {hook: registering("late")}),
        ("eager", {hook: registering("eager", tryfirst=True)}),
        ("wrap", {hook: wrapping}),
    )
    registry = plugins.registry
    assert log == [
        "wrapper before yield as wrap",  # each implementation gets a Registrar bound to its own plugin
        "eager as eager",
        "late as late",
        "early as early",
        "wrapper after yield",
    ]
    # "late" and "eager" were called before "early" but registered after it: the conflict is theirs
    assert plugins.infos["early"].errors == []
    assert any("claimed by two distributions" in e for e in plugins.infos["late"].errors)
    assert any("claimed by two distributions" in e for e in plugins.infos["eager"].errors)
    assert registry.resolve("backbone", "wrapped").qualname == "wrap:wrapped"


def test_a_builtin_name_wins_over_an_installed_plugin_called_before_it() -> None:
    @hookimpl(tryfirst=True)
    def steal(registry: Any) -> None:
        registry.add("visionkit:resnet18", "math:sqrt")

    plugins = load_plugins(
        autoload=False, extra=[("thief", SimpleNamespace(visionkit_register_backbones=steal))]
    )
    resnet = plugins.registry.resolve("backbone", "visionkit:resnet18")
    assert resnet.origin.builtin and resnet.origin.plugin == "visionkit_torchvision"
    assert any("visionkit" in e and "thief" in e for e in plugins.infos["thief"].errors)


def test_claim_data_is_firstresult_and_tryfirst_wins() -> None:
    log: Log = []
    hook = "visionkit_claim_data"
    plugins = load(
        ("first", {hook: plain(log, "first", "first:data", tryfirst=True)}),
        ("plain", {hook: plain(log, "plain", "plain:data")}),
        ("never", {hook: plain(log, "never", "never:data", trylast=True)}),
    )
    assert plugins.claim_data(Path("photos")) == "first:data"
    assert log == ["first"]  # firstresult: nothing after the first answer runs


def test_claim_data_without_marks_lets_the_last_registered_answer_and_skips_none() -> None:
    log: Log = []
    hook = "visionkit_claim_data"
    plugins = load(
        ("older", {hook: plain(log, "older", "older:data")}),
        ("newer", {hook: plain(log, "newer", "newer:data")}),
        ("shrugs", {hook: plain(log, "shrugs", None, tryfirst=True)}),
    )
    assert plugins.claim_data(Path("photos")) == "newer:data"
    assert log == ["shrugs", "newer"]


def test_default_callbacks_are_concatenated_in_calling_order() -> None:
    hook = "visionkit_default_callbacks"
    log: Log = []
    plugins = load(
        ("a", {hook: plain(log, "a", ["a1", "a2"])}),
        ("last", {hook: plain(log, "last", ["last"], trylast=True)}),
        ("b", {hook: plain(log, "b", ["b1"])}),
        ("none", {hook: plain(log, "none", None)}),
        ("first", {hook: plain(log, "first", ["first"], tryfirst=True)}),
    )
    assert plugins.default_callbacks("fit", Path("run"), TASK) == ["first", "b1", "a1", "a2", "last"]


def test_progress_bar_is_firstresult_and_a_wrapper_may_replace_the_answer() -> None:
    log: Log = []
    hook = "visionkit_progress_bar"
    plugins = load(
        ("builtin_like", {hook: plain(log, "default", "default bar")}),
        ("fancy", {hook: plain(log, "fancy", "fancy bar", tryfirst=True)}),
        ("wrap", {hook: wrapper(log, "wrap", replace=lambda bar: f"framed {bar}")}),
    )
    assert plugins.progress_bar("fit") == "framed fancy bar"
    assert log == ["wrap: before yield", "fancy", "wrap: after yield"]


def test_an_old_style_hookwrapper_sees_and_may_force_the_result() -> None:
    seen: list[Any] = []

    @hookimpl(hookwrapper=True)
    def old_style() -> Generator[None, Any, None]:
        outcome = yield
        seen.append(outcome.get_result())
        outcome.force_result([["forced"]])  # the hook's result: one list per implementation

    hook = "visionkit_default_callbacks"
    plugins = load(("cb", {hook: plain([], "cb", ["cb"])}), ("old", {hook: old_style}))
    assert plugins.default_callbacks("fit", None, TASK) == ["forced"]
    assert seen == [[["cb"]]]


def test_add_commands_goes_through_pluggy_order() -> None:
    log: Log = []
    plugins = load(
        ("one", {"visionkit_add_commands": plain(log, "one")}),
        ("two", {"visionkit_add_commands": plain(log, "two", trylast=True)}),
        ("three", {"visionkit_add_commands": plain(log, "three")}),
        ("wrap", {"visionkit_add_commands": wrapper(log, "wrap")}),
    )
    plugins.add_commands(typer.Typer())
    assert log == ["wrap: before yield", "three", "one", "two", "wrap: after yield"]


# -- isolation inside the call loop ------------------------------------------------------

SOFT_CALLS: dict[str, Callable[[Plugins], Any]] = {
    "visionkit_claim_data": lambda p: p.claim_data(Path("photos")),
    "visionkit_default_callbacks": lambda p: p.default_callbacks("fit", None, TASK),
    "visionkit_progress_bar": lambda p: p.progress_bar("fit"),
}
SOFT_ANSWERS = {
    "visionkit_claim_data": ("good:data", "good:data"),
    "visionkit_default_callbacks": (["good"], ["good"]),
    "visionkit_progress_bar": ("good bar", "good bar"),
}


def report(plugins: Plugins) -> list[str]:
    out = io.StringIO()
    plugins.report_errors(out)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("hook", sorted(SOFT_CALLS))
def test_a_raising_implementation_is_named_warned_once_and_skipped(
    hook: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log: Log = []
    answer, expected = SOFT_ANSWERS[hook]
    plugins = load(("good", {hook: plain(log, "good", answer)}), ("bad", {hook: raising(log, "bad")}))
    assert SOFT_CALLS[hook](plugins) == expected
    assert SOFT_CALLS[hook](plugins) == expected  # again: skipped again, not warned again
    assert log == ["bad", "good", "bad", "good"]
    bad = plugins.infos["bad"]
    assert (bad.status, bad.errors) == ("failed", [f"{hook}: RuntimeError: bad exploded"])
    [warning] = capsys.readouterr().err.splitlines()
    assert warning.startswith("visionkit: warning: plugin 'bad' ((local bad) 0) failed: ")
    assert plugins.infos["good"].errors == []


@pytest.mark.parametrize(
    ("hook", "answer", "error"),
    [
        ("visionkit_claim_data", 42, "visionkit_claim_data: TypeError: returned int 42, not a dataset name"),
        (
            "visionkit_default_callbacks",
            "cb",
            "visionkit_default_callbacks: TypeError: returned str, not a list",
        ),
    ],
)
def test_an_answer_of_the_wrong_type_counts_as_the_plugins_error(hook: str, answer: Any, error: str) -> None:
    good = SOFT_ANSWERS[hook][0]
    plugins = load(("good", {hook: plain([], "good", good)}), ("odd", {hook: plain([], "odd", answer)}))
    assert SOFT_CALLS[hook](plugins) == SOFT_ANSWERS[hook][1]
    assert plugins.infos["odd"].errors[0].startswith(error)


@pytest.mark.parametrize("side", ["before", "after"])
def test_a_wrapper_raising_on_either_side_of_its_yield_is_named_and_the_result_kept(side: str) -> None:
    @hookimpl(wrapper=True)
    def broken() -> Generator[None, Any, Any]:
        if side == "before":
            raise RuntimeError("broke before")
        yield
        raise RuntimeError("broke after")

    log: Log = []
    plugins = load(
        ("bar", {"visionkit_progress_bar": plain(log, "bar", "the bar")}),
        ("wrap", {"visionkit_progress_bar": broken}),
    )
    assert plugins.progress_bar("fit") == "the bar"
    assert log == ["bar"]
    assert plugins.infos["wrap"].errors == [
        f"visionkit_progress_bar (wrapper, {side} yield): RuntimeError: broke {side}"
    ]
    assert plugins.infos["bar"].errors == []


def test_a_wrapper_that_never_yields_is_named() -> None:
    @hookimpl(wrapper=True)
    def lazy() -> Generator[None, Any, Any]:
        if True:
            return None
        yield  # a generator function that returns before its yield

    plugins = load(
        ("bar", {"visionkit_progress_bar": plain([], "bar", "the bar")}),
        ("lazy", {"visionkit_progress_bar": lazy}),
    )
    assert plugins.progress_bar("fit") == "the bar"
    assert plugins.infos["lazy"].errors == [
        "visionkit_progress_bar (wrapper, before yield): RuntimeError: the wrapper returned without yielding"
    ]


@pytest.mark.parametrize("style", ["wrapper", "hookwrapper"])
def test_an_error_from_a_wrapped_implementation_passes_through_the_wrapper_unattributed(style: str) -> None:
    seen: list[str] = []

    if style == "wrapper":

        @hookimpl(wrapper=True)
        def around(trainer_kwargs: dict[str, Any]) -> Generator[None, Any, Any]:
            try:
                return (yield)
            except PluginLoadError as err:
                seen.append(f"saw {type(err).__name__}")
                raise

    else:

        @hookimpl(hookwrapper=True)
        def around(trainer_kwargs: dict[str, Any]) -> Generator[None, Any, None]:
            outcome = yield
            seen.append(f"saw {type(outcome.exception).__name__}")
            outcome.get_result()  # re-raises the wrapped error

    hook = "visionkit_configure_trainer"
    plugins = load(("inner", {hook: raising([], "inner")}), ("outer", {hook: around}))
    # pluggy itself warns when an old-style hookwrapper re-raises in its teardown
    warns = (
        pytest.warns(pluggy.PluggyTeardownRaisedWarning)
        if style == "hookwrapper"
        else contextlib.nullcontext()
    )
    with warns, pytest.raises(PluginLoadError) as err:
        plugins.configure_trainer({"callbacks": []}, RunConfig())
    assert str(err.value) == (
        "plugin 'inner' ((local inner) 0) failed in visionkit_configure_trainer: RuntimeError: inner exploded"
    )
    assert seen == ["saw PluginLoadError"]
    assert plugins.infos["outer"].errors == []


def test_a_wrapper_may_handle_the_error_of_what_it_wraps() -> None:
    @hookimpl(wrapper=True)
    def forgiving() -> Generator[None, Any, Any]:
        try:
            return (yield)
        except PluginLoadError:
            return None  # pluggy lets a wrapper swallow it; visionkit does not interfere

    hook = "visionkit_configure_trainer"
    plugins = load(("inner", {hook: raising([], "inner")}), ("outer", {hook: forgiving}))
    plugins.configure_trainer({"callbacks": []}, RunConfig())
    assert plugins.infos["outer"].errors == []


def test_a_configure_trainer_wrapper_raising_after_its_yield_stops_the_run_naming_it() -> None:
    @hookimpl(wrapper=True)
    def broken() -> Generator[None, Any, Any]:
        yield
        raise KeyError("max_epochs")

    hook = "visionkit_configure_trainer"
    plugins = load(("fine", {hook: plain([], "fine")}), ("wrap", {hook: broken}))
    with pytest.raises(PluginLoadError) as err:
        plugins.configure_trainer({"callbacks": []}, RunConfig())
    assert str(err.value) == (
        "plugin 'wrap' ((local wrap) 0) failed in visionkit_configure_trainer (wrapper, after yield): "
        "KeyError: 'max_epochs'"
    )


def test_a_raising_registration_wrapper_skips_its_plugin_and_keeps_the_others() -> None:
    @hookimpl(wrapper=True)
    def broken(registry: Any) -> Generator[None, None, None]:
        registry.add("never", "math:sqrt")
        yield
        raise RuntimeError("after")

    def adds(name: str) -> Callable[..., None]:
        return hookimpl(lambda registry: registry.add(name, "math:sqrt"))

    plugins = load(
        ("good", {"visionkit_register_backbones": adds("net")}),
        ("wrap", {"visionkit_register_backbones": broken, "visionkit_register_tasks": adds("task")}),
    )
    registry = plugins.registry
    assert [c.qualname for c in registry.listing("backbone")] == ["good:net"]
    assert registry.listing("task") == []  # its other registration hook is skipped too
    assert plugins.infos["wrap"].errors == [
        "visionkit_register_backbones (wrapper, after yield): RuntimeError: after"
    ]
    assert plugins.pm.get_plugin("wrap") is None


def test_a_raising_add_commands_implementation_loses_its_commands_and_the_rest_stay() -> None:
    @hookimpl
    def half(app: typer.Typer) -> None:
        app.command("half-done")(lambda: None)
        raise RuntimeError("half way")

    @hookimpl
    def hello(app: typer.Typer) -> None:
        app.command("hello")(lambda: typer.echo("hi"))

    plugins = load(("hello", {"visionkit_add_commands": hello}), ("half", {"visionkit_add_commands": half}))
    app = typer.Typer()
    app.command("noop")(lambda: None)
    plugins.add_commands(app)
    assert [c.name for c in app.registered_commands] == ["noop", "hello"]
    assert CliRunner().invoke(app, ["hello"]).output == "hi\n"
    assert plugins.infos["half"].errors == ["visionkit_add_commands: RuntimeError: half way"]
    assert report(plugins)[0].startswith("visionkit: warning: plugin 'half'")
