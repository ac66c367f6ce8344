"""Meta-tests of the plugin contract: reference docs, coverage by tests, and the compatibility policy.

- every hookspec is in ``docs/hooks.md`` with its current signature, firstresult flag and
  since-version (and the reference lists no hook that does not exist);
- every hookspec is exercised: a probe plugin must implement each one with all its
  arguments (so a new hookspec fails here until it is added), and each is called through
  the ``Plugins`` facade the way visionkit calls it;
- hooks only gain arguments (checked against the contract as released in each version:
  1.0, and 1.1 which added hooks), and an implementation may take a subset of a hook's
  arguments.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from visionkit_core import HOOKSPEC_VERSION, hookimpl
from visionkit_core.plugin import hookspecs
from visionkit_core.plugin.contract import TaskSpec
from visionkit_core.plugin.manager import load_plugins
from visionkit_core.run.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
HOOKS_MD = ROOT / "docs" / "hooks.md"
HOOKSPECS = sorted(n for n in dir(hookspecs) if n.startswith("visionkit_"))

#: The contract as released in hookspec 1.0: hook -> arguments. Never edit an entry; hooks
#: may only gain arguments (appended) and new hooks may only be added.
CONTRACT_1_0 = {
    "visionkit_register_backbones": ["registry"],
    "visionkit_register_tasks": ["registry"],
    "visionkit_register_datasets": ["registry"],
    "visionkit_register_callbacks": ["registry"],
    "visionkit_register_loggers": ["registry"],
    "visionkit_add_commands": ["app"],
    "visionkit_configure_trainer": ["trainer_kwargs", "run"],
}

#: Hooks added in hookspec 1.1, as released. Never edit an entry (same rules as 1.0).
CONTRACT_1_1 = {
    "visionkit_claim_data": ["path"],
    "visionkit_default_callbacks": ["stage", "run_dir", "task"],
    "visionkit_progress_bar": ["stage"],
}

#: Hookspec 1.2 added no hook; it appended arguments to existing ones (the whole list, as released).
APPENDED_1_2 = {
    "visionkit_claim_data": ["path", "task"],
}

#: Every released contract, by version; a hook's "Since X.Y." must name the one that added it.
CONTRACTS = {"1.0": CONTRACT_1_0, "1.1": CONTRACT_1_1, "1.2": {}}
APPENDED = {"1.2": APPENDED_1_2}
FROZEN = {
    hook: args
    for contract in [*CONTRACTS.values(), *APPENDED.values()]  # later releases' lists extend earlier ones
    for hook, args in contract.items()
}


def spec_signature(name: str) -> str:
    """``def name(arg: Type, ...) -> Ret`` as written in hookspecs.py (annotations are strings there)."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {name}({params}) -> {sig.return_annotation}"


def spec_opts(name: str) -> dict[str, Any]:
    return getattr(getattr(hookspecs, name), f"{hookspecs.PROJECT}_spec")  # type: ignore[no-any-return]


def since(name: str) -> str:
    found = re.search(r"Since (\d+\.\d+)\.", inspect.getdoc(getattr(hookspecs, name)) or "")
    assert found, f"{name}'s docstring must say 'Since X.Y.'"
    return found.group(1)


def doc_section(name: str) -> str:
    text = HOOKS_MD.read_text(encoding="utf-8")
    match = re.search(rf"^### {name}\n(.*?)(?=^#{{2,3}} |\Z)", text, re.S | re.M)
    assert match, f"docs/hooks.md has no '### {name}' section"
    return match.group(1)


# -- the reference ------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOOKSPECS)
def test_hook_reference_shows_the_current_signature(name: str) -> None:
    assert f"```python\n{spec_signature(name)}\n```" in doc_section(name)


@pytest.mark.parametrize("name", HOOKSPECS)
def test_hook_reference_states_firstresult_and_since(name: str) -> None:
    section = doc_section(name)
    firstresult = spec_opts(name)["firstresult"]
    assert f"- firstresult: {'yes' if firstresult else 'no'}\n" in section
    assert f"- since: {since(name)}\n" in section
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert ("Not ``firstresult``" in doc) is (not firstresult), "the docstring must agree with the spec"


@pytest.mark.parametrize("name", HOOKSPECS)
def test_hook_reference_summary_table_has_a_row(name: str) -> None:
    args = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    first = "yes" if spec_opts(name)["firstresult"] else "no"
    assert f"| `{name}({args})` | {first} | {since(name)} |" in HOOKS_MD.read_text(encoding="utf-8")


def test_hook_reference_lists_no_other_hooks_and_the_current_version() -> None:
    text = HOOKS_MD.read_text(encoding="utf-8")
    assert sorted(set(re.findall(r"^### (visionkit_\w+)$", text, re.M))) == HOOKSPECS
    assert f"Hookspec version: **{HOOKSPEC_VERSION}**" in text


# -- every hook is exercised --------------------------------------------------------------


class Probe:
    """Implements every hook with every argument and records each call."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, Any]] = {}

    @hookimpl
    def visionkit_register_backbones(self, registry: Any) -> None:
        self.calls["visionkit_register_backbones"] = {"registry": registry}
        registry.add("net", "math:sqrt")

    @hookimpl
    def visionkit_register_tasks(self, registry: Any) -> None:
        self.calls["visionkit_register_tasks"] = {"registry": registry}
        registry.add("task", "math:sqrt")

    @hookimpl
    def visionkit_register_datasets(self, registry: Any) -> None:
        self.calls["visionkit_register_datasets"] = {"registry": registry}
        registry.add("data", "math:sqrt")

    @hookimpl
    def visionkit_register_callbacks(self, registry: Any) -> None:
        self.calls["visionkit_register_callbacks"] = {"registry": registry}
        registry.add("cb", "math:sqrt")

    @hookimpl
    def visionkit_register_loggers(self, registry: Any) -> None:
        self.calls["visionkit_register_loggers"] = {"registry": registry}
        registry.add("log", "math:sqrt")

    @hookimpl
    def visionkit_claim_data(self, path: Path, task: str | None) -> str | None:
        self.calls["visionkit_claim_data"] = {"path": path, "task": task}
        return "probe:data" if path.name == "probe-layout" and task in (None, "probe:task") else None

    @hookimpl
    def visionkit_default_callbacks(self, stage: str, run_dir: Path | None, task: TaskSpec) -> list[Any]:
        self.calls["visionkit_default_callbacks"] = {"stage": stage, "run_dir": run_dir, "task": task}
        return [f"probe {stage} callback watching {task.monitor}"]

    @hookimpl
    def visionkit_progress_bar(self, stage: str) -> Any:
        self.calls["visionkit_progress_bar"] = {"stage": stage}
        return f"probe {stage} bar"

    @hookimpl
    def visionkit_add_commands(self, app: typer.Typer) -> None:
        self.calls["visionkit_add_commands"] = {"app": app}

        @app.command("probe-hello")
        def hello() -> None:
            typer.echo("probe says hello")

    @hookimpl
    def visionkit_configure_trainer(self, trainer_kwargs: dict[str, Any], run: RunConfig) -> None:
        self.calls["visionkit_configure_trainer"] = {"trainer_kwargs": trainer_kwargs, "run": run}
        trainer_kwargs["callbacks"].append(f"probe saw {run.backbone}")


def test_the_probe_implements_every_hookspec_with_every_argument() -> None:
    for name in HOOKSPECS:
        impl_args = list(inspect.signature(getattr(Probe, name)).parameters)[1:]
        assert impl_args == list(inspect.signature(getattr(hookspecs, name)).parameters), name


def test_every_hookspec_is_called_through_the_facade() -> None:
    probe = Probe()
    plugins = load_plugins(builtins=(), autoload=False, extra=[("probe", probe)])
    registry = plugins.registry
    for kind, name in [
        ("backbone", "net"),
        ("task", "task"),
        ("dataset", "data"),
        ("callback", "cb"),
        ("logger", "log"),
    ]:
        assert registry.resolve(kind, f"probe:{name}").origin.plugin == "probe"
    app = typer.Typer()
    app.command("noop")(lambda: None)
    plugins.add_commands(app)
    assert CliRunner().invoke(app, ["probe-hello"]).output == "probe says hello\n"
    trainer_kwargs: dict[str, Any] = {"callbacks": [], "logger": False}
    plugins.configure_trainer(trainer_kwargs, RunConfig(backbone="probe:net"))
    assert trainer_kwargs["callbacks"] == ["probe saw probe:net"]
    assert plugins.claim_data(Path("somewhere/probe-layout")) == "probe:data"
    assert plugins.claim_data(Path("somewhere/else")) is None
    assert plugins.claim_data(Path("somewhere/probe-layout"), "probe:task") == "probe:data"
    assert plugins.claim_data(Path("somewhere/probe-layout"), "visionkit:detection") is None
    task = TaskSpec(name="probe", monitor="val/acc")
    assert plugins.default_callbacks("fit", Path("run"), task) == ["probe fit callback watching val/acc"]
    assert plugins.progress_bar("test") == "probe test bar"
    assert sorted(probe.calls) == HOOKSPECS
    assert not plugins.failed


# -- compatibility policy -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_hooks_only_gain_arguments(name: str) -> None:
    assert name in HOOKSPECS, f"{name} was removed or renamed; hooks may only be added"
    current = list(inspect.signature(getattr(hookspecs, name)).parameters)
    assert current[: len(FROZEN[name])] == FROZEN[name], "arguments may only be appended"


@pytest.mark.parametrize("name", HOOKSPECS)
def test_every_hook_is_in_the_contract_of_the_version_that_added_it(name: str) -> None:
    added = [version for version, contract in CONTRACTS.items() if name in contract]
    assert added == [since(name)], f"add {name} to CONTRACT_{since(name).replace('.', '_')}, never edit one"


def test_the_newest_contract_is_the_current_hookspec_version() -> None:
    assert max(CONTRACTS, key=lambda v: tuple(map(int, v.split(".")))) == HOOKSPEC_VERSION


def test_an_implementation_may_take_a_subset_of_the_arguments() -> None:
    seen: list[Any] = []

    class Partial:
        @hookimpl
        def visionkit_configure_trainer(self, run: RunConfig) -> None:
            seen.append(run.epochs)

        @hookimpl
        def visionkit_register_backbones(self) -> None:
            seen.append("no arguments at all")

    plugins = load_plugins(builtins=(), autoload=False, extra=[("partial", Partial())])
    plugins.registry  # noqa: B018
    plugins.configure_trainer({"callbacks": []}, RunConfig(epochs=3))
    assert seen == ["no arguments at all", 3] and not plugins.failed


def test_the_hookspec_version_is_what_plugins_list_shows(run_cli) -> None:  # type: ignore[no-untyped-def]
    assert re.fullmatch(r"\d+\.\d+", HOOKSPEC_VERSION)
    out = run_cli(["plugins", "list"])
    assert out.returncode == 0 and f"hookspec {HOOKSPEC_VERSION}" in out.stdout.splitlines()[0]
