"""``visionkit plugins check``: verify plugins against the contract before any user does.

For every component a plugin registered, in order: (a) its factory imports, (b) every
keyword option has a type ``--set`` values can be converted to (an annotation, or a default
of a usable type), (c) a tiny smoke run (:mod:`visionkit_core.kit.checks.smoke`): a backbone
builds and maps images to logits, a dataset yields a batch, a task trains one batch with its
demo data and then validates, tests, predicts and exports from its checkpoint through the
core's own code. Each check is one :class:`CheckResult`; a :class:`CheckReport` holds them.
``skip`` names smoke phases not to run (:func:`skipped_phases`).
Importing this module is cheap; the smoke imports torch when it runs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionkit_core.errors import UsageError
from visionkit_core.kit.checks.report import CheckReport, CheckResult, describe_error
from visionkit_core.plugin.registry import KINDS, Component, NamespaceProvider, load_object

if TYPE_CHECKING:
    from visionkit_core.plugin.manager import Plugins

#: Names tried first when smoking a dynamic namespace (small models of timm and torchvision).
SMALL_MODELS = ("resnet10t", "test_resnet", "mobilenet_v3_small", "resnet18", "mobilenetv3_small_050")


def selected(plugins: Plugins, names: Sequence[str] | None) -> dict[str, set[str] | None]:
    """What to check, plugin by plugin: its components named in ``names`` (``visionkit:multilabel``,
    ``timm:*``), or all of them (``None``) when the plugin itself is named; no names: every plugin."""
    known = list(plugins.infos)
    if not names:
        return {n: None for n in known if plugins.infos[n].status != "disabled"}
    owner = {component_name(comp): plugin for plugin in known for comp in components_of(plugins, plugin)}
    missing = [n for n in names if n not in plugins.infos and n not in owner]
    if missing:
        raise UsageError(
            f"no plugin named {', '.join(map(repr, missing))} (nor a component of that name); "
            f"installed plugins: {', '.join(known)}. Is it installed in this environment (pip install -e .)?"
        )
    chosen: dict[str, set[str] | None] = {}
    for name in names:
        if name in plugins.infos:
            chosen[name] = None
        elif chosen.setdefault(owner[name], set()) is not None:
            chosen[owner[name]].add(name)  # type: ignore[union-attr]
    return chosen


def component_name(comp: Component | NamespaceProvider) -> str:
    """How a check line names ``comp``: ``visionkit:multilabel``, ``timm:*`` for a namespace."""
    return f"{comp.namespace}:*" if isinstance(comp, NamespaceProvider) else comp.qualname


def skipped_phases(names: Collection[str]) -> frozenset[str]:
    """The smoke phases ``names`` asks not to run (``smoke:export-onnx``; the ``smoke:`` may be
    left out); a usage error naming the phases for anything else."""
    from visionkit_core.kit.checks.smoke import PHASES

    chosen = {n if n.startswith("smoke:") else f"smoke:{n}" for n in (s.strip() for s in names)}
    unknown = sorted(n for n in chosen if n not in PHASES and not re.fullmatch(r"smoke:export-[\w.-]+", n))
    if unknown:
        raise UsageError(
            f"--skip {', '.join(unknown)}: not a smoke phase; the phases are "
            f"{', '.join(PHASES)} and smoke:export-FORMAT (one per format a task exports)"
        )
    return frozenset(chosen)


def components_of(plugins: Plugins, plugin: str) -> Iterator[Component | NamespaceProvider]:
    """What ``plugin`` registered, kind by kind (static names, then its dynamic namespaces)."""
    registry = plugins.registry
    for kind in KINDS:
        for comp in registry.static_components(kind):
            if comp.origin.plugin == plugin:
                yield comp
        for provider in registry.providers(kind):
            if provider.origin.plugin == plugin:
                yield provider


def run_checks(
    plugins: Plugins,
    names: Sequence[str] | None = None,
    *,
    smoke: bool = True,
    data: str | None = None,
    work_dir: Path | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    skip: Collection[str] = (),
) -> CheckReport:
    """Check the plugins ``names`` (default: every loaded plugin; a component's name checks that
    component of its plugin) against the contract; the smoke phases in ``skip`` are reported as
    skipped without running."""
    import tempfile

    started = time.perf_counter()
    skipped = skipped_phases(skip)
    chosen = selected(plugins, names)
    report = CheckReport(list(chosen))

    def add(result: CheckResult) -> CheckResult:
        report.results.append(result)
        if on_result is not None:
            on_result(result)
        return result

    with tempfile.TemporaryDirectory(prefix="visionkit-check-", dir=work_dir) as tmp:
        for plugin, only in chosen.items():
            info = plugins.infos[plugin]
            if info.errors:
                for err in info.errors:
                    add(CheckResult(plugin, "plugin", plugin, "load", "FAIL", err))
            else:
                add(
                    CheckResult(plugin, "plugin", plugin, "load", "ok", f"{info.distribution} {info.version}")
                )
            for comp in components_of(plugins, plugin):
                if only is not None and component_name(comp) not in only:
                    continue
                checks = check_component(plugins, comp, smoke=smoke, data=data, tmp=Path(tmp), skip=skipped)
                for result in checks:
                    add(result)
    report.wall_s = time.perf_counter() - started
    return report


def check_component(
    plugins: Plugins,
    comp: Component | NamespaceProvider,
    *,
    smoke: bool,
    data: str | None,
    tmp: Path,
    skip: Collection[str] = (),
) -> Iterator[CheckResult]:
    """The checks of one component, in order; later ones are skipped when its factory cannot load."""
    if isinstance(comp, NamespaceProvider):
        yield from _check_provider(plugins, comp, smoke=smoke, tmp=tmp, skip=skip)
        return
    plugin, kind, name = comp.origin.plugin, comp.kind, comp.qualname
    started = time.perf_counter()
    try:
        factory = comp.load()
    except BaseException as err:  # a plugin's import may raise anything, SystemExit included
        if isinstance(err, KeyboardInterrupt):
            raise
        yield CheckResult(
            plugin, kind, name, "import", "FAIL", f"{_ref(comp.factory)}: {describe_error(err)}"
        )
        return
    yield CheckResult(plugin, kind, name, "import", "ok", _ref(comp.factory), time.perf_counter() - started)
    yield _check_options(plugin, kind, name, factory)
    if kind == "task":
        yield _check_task_spec(plugin, name, factory)
    if kind in ("task", "dataset"):
        yield check_optional_members(plugin, kind, name, factory)
    if not smoke or kind not in ("backbone", "dataset", "task"):
        return
    from visionkit_core.kit.checks import smoke as smoke_runs

    run = {"backbone": smoke_runs.smoke_backbone, "dataset": smoke_runs.smoke_dataset}.get(kind)
    run = run or smoke_runs.smoke_task
    yield from run(plugins, comp, data, tmp, skip)


def _check_provider(
    plugins: Plugins, provider: NamespaceProvider, *, smoke: bool, tmp: Path, skip: Collection[str] = ()
) -> Iterator[CheckResult]:
    plugin, kind, name = provider.origin.plugin, provider.kind, f"{provider.namespace}:*"
    try:
        resolve = load_object(provider.resolve)
        lister = load_object(provider.list_names) if provider.list_names is not None else None
    except Exception as err:
        refs = f"{_ref(provider.resolve)} / {_ref(provider.list_names)}"
        yield CheckResult(plugin, kind, name, "import", "FAIL", f"{refs}: {describe_error(err)}")
        return
    yield CheckResult(plugin, kind, name, "import", "ok", f"resolve {_ref(provider.resolve)}")
    try:
        listed = provider.names()
    except Exception as err:
        yield CheckResult(
            plugin, kind, name, "list", "FAIL", f"{_ref(provider.list_names)}: {describe_error(err)}"
        )
        return
    if lister is None:
        yield CheckResult(plugin, kind, name, "list", "skip", "no list_names: names cannot be listed")
    else:
        yield CheckResult(plugin, kind, name, "list", "ok", f"{len(listed)} names")
    hinted = list(getattr(resolve, "visionkit_smoke_names", ()) or ())
    picks = (hinted or [n for n in SMALL_MODELS if n in set(listed)] or listed)[:2]
    if not picks:
        yield CheckResult(plugin, kind, name, "resolve", "skip", "the namespace lists no names to try")
        return
    for bare in picks:
        qual = f"{provider.namespace}:{bare}"
        try:
            comp = provider.lookup(bare)
            if comp is None:
                raise LookupError(f"resolve({bare!r}) returned None for a name list_names gave")
            factory = comp.load()
        except Exception as err:
            yield CheckResult(plugin, kind, qual, "import", "FAIL", describe_error(err))
            continue
        yield _check_options(plugin, kind, qual, factory)
        if smoke:
            from visionkit_core.kit.checks.smoke import smoke_backbone

            yield from smoke_backbone(plugins, comp, None, tmp, skip)


def reserved_for(kind: str) -> dict[str, str]:
    """Arguments visionkit passes a factory of ``kind`` itself (not options)."""
    from visionkit_core.run import build, resolve

    table = {
        "backbone": build.BACKBONE_RESERVED,
        "task": resolve.TASK_RESERVED,
        "dataset": resolve.DATASET_RESERVED,
        "logger": resolve.LOGGER_RESERVED,
        "callback": resolve.CALLBACK_RESERVED,
    }
    return dict(table.get(kind, {}))


def _check_options(plugin: str, kind: str, name: str, factory: Any) -> CheckResult:
    from visionkit_core.run.convert import option_specs, type_name

    found = option_specs(factory)
    if found is None:
        return CheckResult(plugin, kind, name, "options", "skip", "no signature to read options from")
    specs, _ = found
    reserved = reserved_for(kind)
    options = {n: s for n, s in specs.items() if n not in reserved}
    bad = [s for s in options.values() if s.problem is not None]
    if bad:
        detail = "; ".join(f"{s.name}: {s.problem}" for s in bad)
        return CheckResult(
            plugin,
            kind,
            name,
            "options",
            "FAIL",
            f"--set cannot check {', '.join(s.name for s in bad)} ({detail}); annotate each option, "
            "e.g. `width: int = 16`",
        )
    shown = ", ".join(f"{n}: {type_name(s.target)}" for n, s in options.items()) or "no options"
    return CheckResult(plugin, kind, name, "options", "ok", shown)


def _check_task_spec(plugin: str, name: str, factory: Any) -> CheckResult:
    from visionkit_core.plugin.contract import task_spec_of

    spec = task_spec_of(factory)
    if spec is None:
        return CheckResult(
            plugin,
            "task",
            name,
            "contract",
            "FAIL",
            "the factory has no `visionkit_task = TaskSpec(...)` attribute (monitor, mode, default data...)",
        )
    missing = [
        m for m in ("evaluation_callbacks", "write_predictions", "export_spec") if not hasattr(factory, m)
    ]
    if isinstance(factory, type) and missing:
        return CheckResult(
            plugin, "task", name, "contract", "FAIL", f"{factory.__name__} lacks {', '.join(missing)}"
        )
    return CheckResult(
        plugin,
        "task",
        name,
        "contract",
        "ok",
        f"TaskSpec {spec.name!r}, monitor {spec.monitor} ({spec.mode})",
    )


def check_optional_members(plugin: str, kind: str, name: str, factory: Any) -> CheckResult:
    """The contract's optional members (``OPTIONAL_MEMBERS``) the factory has, each as declared; a
    ``visionkit_*`` attribute the contract does not declare is a typo or an undocumented lookup."""
    import inspect

    from visionkit_core.plugin.contract import OPTIONAL_MEMBERS

    declared = OPTIONAL_MEMBERS.get(kind, ())
    known = {m.name for members in OPTIONAL_MEMBERS.values() for m in members} | {"visionkit_task"}
    problems, found = [], []
    for member in (m for m in declared if m.on == "class" and hasattr(factory, m.name)):
        value = getattr(factory, member.name)
        found.append(member.name)
        if member.expect == "positive int" and not (isinstance(value, int) and value > 0):
            problems.append(f"{member.name} must be a positive int, got {value!r}")
        elif member.expect == "callable" and not callable(value):
            problems.append(f"{member.name} must be callable ({member.doc})")
        elif member.expect == "callable" and member.params is not None:
            try:
                params = [
                    p
                    for p in inspect.signature(value).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                    and p.name not in ("self", "cls")
                ]
            except (TypeError, ValueError):
                continue
            if len(params) < member.params:
                problems.append(
                    f"{member.name} takes {len(params)} arguments, not {member.params}: {member.doc}"
                )
    unknown = sorted(a for a in dir(factory) if a.startswith("visionkit_") and a not in known)
    problems += [
        f"{a} is not part of the contract (a typo?); see docs/plugins.md, 'Optional members'" for a in unknown
    ]
    if problems:
        return CheckResult(plugin, kind, name, "optional", "FAIL", "; ".join(problems))
    return CheckResult(plugin, kind, name, "optional", "ok", ", ".join(found) or "none")


def _ref(factory: Any) -> str:
    if factory is None or isinstance(factory, str):
        return repr(factory) if factory is None else factory
    module = getattr(factory, "__module__", "?")
    return f"{module}:{getattr(factory, '__qualname__', type(factory).__name__)}"
