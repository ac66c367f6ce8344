"""Build the pluggy PluginManager: built-in plugins plus the ``visionkit`` entry points.

Each plugin is imported and registered inside its own ``try`` and each hook implementation is
isolated (``isolation.py``), so a broken plugin is recorded, reported once and skipped while
pluggy's order holds (docs/hooks.md). ``Plugins`` is the typed facade the rest of visionkit uses.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import IO, TYPE_CHECKING, Any

import pluggy

from visionkit_core.errors import PluginLoadError
from visionkit_core.plugin import hookspecs
from visionkit_core.plugin.isolation import PerPlugin, isolate
from visionkit_core.plugin.registry import KINDS, Origin, Registrar, Registry, _error_text

if TYPE_CHECKING:
    from pathlib import Path

    import typer

    from visionkit_core.plugin.contract import TaskSpec
    from visionkit_core.run.config import RunConfig

ENTRY_POINT_GROUP = "visionkit"

#: The built-in plugins (``visionkit_NAME.plugin``), registered through the same hooks as third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = tuple(
    f"visionkit_{name}.plugin"
    for name in (
        "torchvision timm classification segmentation detection instance_segmentation keypoints "
        "imagefolder loggers callbacks wandb_images devtools sweep serve export data"
    ).split()
)

_REGISTER_HOOKS = {kind: f"visionkit_register_{kind}s" for kind in KINDS}
_REGISTRATION = frozenset(_REGISTER_HOOKS.values())


@dataclass
class PluginInfo:
    """What ``plugins list`` shows for one plugin."""

    name: str
    module: str
    distribution: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    status: str = "loaded"  # loaded | failed | disabled
    #: the first error, kept for ``VISIONKIT_DEBUG=1`` tracebacks
    cause: BaseException | None = field(default=None, repr=False, compare=False)
    #: namespaces its registration hooks named (known once they ran)
    namespaces: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def origin(self) -> Origin:
        return Origin(self.name, self.distribution, self.version, self.builtin)

    def unavailable_reason(self) -> str:
        """Why this plugin's names cannot be used, and what to do (for a failed or disabled plugin)."""
        who = self.origin.describe()
        if self.status == "disabled":
            return (
                f"{who} is installed but disabled in this run (--no-plugin {self.name} or "
                "VISIONKIT_PLUGINS); enable it to use its names"
            )
        failure = "; ".join(e.removeprefix("import: ") for e in self.errors) or "unknown error"
        return (
            f"{who} is installed but failed to load: {failure}; fix or reinstall it "
            "(VISIONKIT_DEBUG=1 for the traceback)"
        )

    def as_dict(self) -> dict[str, Any]:
        """What ``plugins list --json`` shows (the fields with a repr)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.repr}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class Plugins:
    """The loaded plugins: typed hook calls, per-plugin isolation, the registry."""

    def __init__(self, pm: pluggy.PluginManager, infos: dict[str, PluginInfo], strict: bool) -> None:
        self.pm = pm
        self.infos = infos
        self.strict = strict
        self._registry: Registry | None = None
        self._reported: set[str] = set()
        self._raised: set[str] = set()  # plugins whose registration hook raised in this registry build
        self._app: typer.Typer | None = None  # while visionkit_add_commands runs

    def _fail(self, name: str, what: str, err: BaseException) -> None:
        info = self.infos[name]
        if (message := f"{what}: {_error_text(err)}") not in info.errors:
            info.errors.append(message)
        info.cause = info.cause or err
        info.status = "failed"
        if self.strict:
            raise PluginLoadError(f"{info.origin.describe()} failed: " + "; ".join(info.errors)) from err

    @property
    def failed(self) -> list[PluginInfo]:
        return [i for i in self.infos.values() if i.errors]

    def report_errors(self, stream: IO[str] | None = None) -> None:
        """Print each plugin failure once, as a one-line warning on stderr."""
        for info in self.failed:
            if (key := info.name + "|".join(info.errors)) not in self._reported:
                self._reported.add(key)
                print(
                    f"visionkit: warning: {info.origin.describe()} failed: {'; '.join(info.errors)}; it was "
                    f"skipped (set VISIONKIT_STRICT_PLUGINS=1 to make this fatal, --no-plugin {info.name} "
                    "to silence it)",
                    file=stream or sys.stderr,
                )

    def _step(
        self, plugin: str, hook: str, phase: str, call: Callable[[], Any], inner: BaseException | None = None
    ) -> tuple[bool, Any]:
        """Run a piece of ``plugin``'s ``hook`` code (an isolation.Step) under that hook's failure policy."""
        if hook in _REGISTRATION and plugin in self._raised:
            return False, None  # an earlier registration hook of this plugin raised: skip all of it
        app = self._app if hook == "visionkit_add_commands" else None
        before = (list(app.registered_commands), list(app.registered_groups)) if app is not None else ([], [])
        try:
            value = call()
            if app is not None:
                _build_new_commands(app, *before)
            if not phase:
                _check_result(hook, value)
            return True, value
        except Exception as err:
            if err is inner:  # raised by the implementations a wrapper wraps: not this plugin's
                raise
            what = f"{hook} ({phase})" if phase else hook
            if hook == "visionkit_configure_trainer":
                who = self.infos[plugin].origin.describe()
                raise PluginLoadError(f"{who} failed in {what}: {type(err).__name__}: {err}") from err
            if hook in _REGISTRATION:
                self._raised.add(plugin)  # its staged registrations are dropped
            if app is not None:
                app.registered_commands[:], app.registered_groups[:] = before
            self._fail(plugin, what, err)
            if app is not None:
                self.skip(plugin)  # pluggy called this hook with a copy of the impl list: safe now
            elif hook not in _REGISTRATION:
                self.report_errors()
            return False, None

    def skip(self, name: str) -> None:
        """Unregister a failed plugin: none of its hooks runs from now on (the registry is rebuilt)."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self.infos[name].registered = []
        self._registry = None

    @property
    def registry(self) -> Registry:
        """The registry, filled by every plugin's registration hooks on first use.

        Each plugin's implementations receive its own staging ``Registrar``; a plugin whose hook
        raises is skipped *entirely*. The others' registrations are then committed kind by kind in
        *registration* order (built-ins first), whatever order pluggy called them in (docs/hooks.md).
        Namespaces of installed plugins that did not load are marked, so their names say why.
        """
        if self._registry is not None:
            return self._registry
        registry = Registry()
        staged: dict[tuple[str, str], Registrar] = {}

        def registrar(kind: str, plugin: str) -> Registrar:  # one per plugin and kind, however many impls
            info = self.infos[plugin]
            new = Registrar(registry, kind, info.origin, "visionkit" if info.builtin else info.name)
            return staged.setdefault((kind, plugin), new)

        self._raised = set()
        for kind in KINDS:
            getattr(self.pm.hook, _REGISTER_HOOKS[kind])(registry=PerPlugin(registrar, kind))
        for name in self._raised:
            self.skip(name)
        order = list(self.infos)
        for kind, name in sorted(staged, key=lambda key: (KINDS.index(key[0]), order.index(key[1]))):
            self.infos[name].namespaces |= staged[kind, name].staged_namespaces
            if name not in self._raised:
                for conflict in staged[kind, name].commit():
                    self._fail(name, _REGISTER_HOOKS[kind], conflict)
        for name, regs in registry.by_plugin.items():
            self.infos[name].registered = regs
        for info in self.infos.values():
            if info.status in ("failed", "disabled") and self.pm.get_plugin(info.name) is None:
                for namespace in sorted(info.namespaces | (set() if info.builtin else {info.name})):
                    registry.mark_unavailable(namespace, info.name, info.unavailable_reason(), info.cause)
        self._registry = registry
        return registry

    def add_commands(self, app: typer.Typer) -> None:
        """Let every plugin add its CLI sub-commands, built right away (Typer resolves annotations only
        then): a plugin whose hook raises *or* whose commands cannot be built is removed and skipped."""
        self._app = app
        try:
            self.pm.hook.visionkit_add_commands(app=app)
        finally:
            self._app = None

    def configure_trainer(self, trainer_kwargs: dict[str, Any], run: RunConfig) -> None:
        """Let every plugin adjust the Trainer arguments; a failure here stops the run."""
        self.pm.hook.visionkit_configure_trainer(trainer_kwargs=trainer_kwargs, run=run)

    def claim_data(self, path: Path, task: str | None = None) -> str | None:
        """The dataset name a plugin claims ``path`` for in a run of ``task`` (``visionkit_claim_data``)."""
        result = self.pm.hook.visionkit_claim_data(path=path, task=task)
        return str(result) if result is not None else None

    def default_callbacks(self, stage: str, run_dir: Path | None, task: TaskSpec) -> list[Any]:
        """Every plugin's default callbacks for a Trainer of ``stage``, in hook calling order."""
        results = self.pm.hook.visionkit_default_callbacks(stage=stage, run_dir=run_dir, task=task)
        return [callback for result in results for callback in result]

    def progress_bar(self, stage: str) -> Any | None:
        """The progress callback for a Trainer of ``stage`` (``visionkit_progress_bar``), or ``None``."""
        return self.pm.hook.visionkit_progress_bar(stage=stage)


def _check_result(hook: str, value: Any) -> None:
    """Raise (as the plugin's error) unless a plain implementation returned what the caller can use."""
    if hook == "visionkit_claim_data" and not isinstance(value, str | None):
        raise TypeError(f"returned {type(value).__name__} {value!r}, not a dataset name (str) or None")
    if hook == "visionkit_default_callbacks" and not isinstance(value, list | tuple | None):
        raise TypeError(f"returned {type(value).__name__}, not a list of callbacks")


def _build_new_commands(app: typer.Typer, commands: list[Any], groups: list[Any]) -> None:
    """Build the commands and groups added to ``app`` since ``commands``/``groups`` (raises if broken)."""
    import typer

    probe = typer.Typer()
    probe.registered_commands = [c for c in app.registered_commands if not any(c is o for o in commands)]
    probe.registered_groups = [g for g in app.registered_groups if not any(g is o for o in groups)]
    if probe.registered_commands or probe.registered_groups:
        typer.main.get_command(probe)


def _check_unknown_hooks(pm: pluggy.PluginManager, plugins: Plugins) -> None:
    """Report and skip plugins implementing a hook no hookspec defines (usually a typo); pluggy's
    ``check_pending`` (allowing ``optionalhook=True``) stops at the first, so it is repeated."""
    known = [n for n in dir(hookspecs) if n.startswith("visionkit_")]
    while True:
        try:
            return pm.check_pending()
        except pluggy.PluginValidationError as err:
            if (name := pm.get_name(err.plugin)) is None:
                raise  # cannot happen for a registered plugin; never loop forever
            unknown = sorted(c.name for c in pm.get_hookcallers(err.plugin) or [] if not c.has_spec())
            hints = [
                repr(hook)
                + "".join(f" (did you mean {m}?)" for m in difflib.get_close_matches(hook, known, n=1))
                for hook in unknown
            ]
            plugins.skip(name)
            message = f"implements unknown hook {', '.join(hints)}"
            plugins._fail(name, "unknown hook", pluggy.PluginValidationError(err.plugin, message))


def load_plugins(
    *,
    builtins: Sequence[str] = BUILTIN_PLUGINS,
    extra: Iterable[tuple[str, object]] = (),
    autoload: bool | None = None,
    allow: Iterable[str] | None = None,
    blocked: Iterable[str] = (),
    strict: bool | None = None,
) -> Plugins:
    """Create a fresh plugin manager.

    ``extra`` is ``(name, module_or_object)`` pairs registered like third-party plugins
    (tests use it). ``autoload``/``allow``/``strict`` default to the environment switches
    ``VISIONKIT_DISABLE_PLUGIN_AUTOLOAD``, ``VISIONKIT_PLUGINS`` and ``VISIONKIT_STRICT_PLUGINS``.
    """
    from visionkit_core import __version__

    if autoload is None:
        autoload = not _env_flag("VISIONKIT_DISABLE_PLUGIN_AUTOLOAD")
    if allow is None and os.environ.get("VISIONKIT_PLUGINS", "").strip():
        allow = [p.strip() for p in os.environ["VISIONKIT_PLUGINS"].split(",") if p.strip()]
    allowed = set(allow) if allow is not None else None
    blocked = set(blocked)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm, {}, _env_flag("VISIONKIT_STRICT_PLUGINS") if strict is None else strict)
    infos = plugins.infos

    def register(info: PluginInfo, obj: object) -> None:
        infos[info.name] = info
        try:
            pm.register(obj, name=info.name)
        except Exception as err:
            plugins._fail(info.name, "register", err)
            return
        callers = pm.get_hookcallers(obj) or []
        info.hooks = sorted(caller.name for caller in callers)
        for caller in callers:
            for impl in caller.get_hookimpls():
                if impl.plugin is obj:
                    isolate(impl, functools.partial(plugins._step, info.name, caller.name))

    candidates: list[tuple[PluginInfo, Callable[[], object]]] = [
        (
            PluginInfo(m.split(".")[0], m, "visionkit", __version__, True),
            functools.partial(importlib.import_module, m),
        )
        for m in builtins
    ]
    if autoload:
        from importlib.metadata import entry_points

        candidates += [
            (PluginInfo(ep.name, ep.value, *_dist_identity(ep.dist), builtin=False), ep.load)
            for ep in entry_points(group=ENTRY_POINT_GROUP)
        ]
    for info, load in candidates:
        if info.name in infos:
            info.errors.append(
                f"plugin name {info.name!r} is already taken by {infos[info.name].distribution}"
            )
            info.status = "failed"
            infos[f"{info.name}@{info.distribution}"] = info
        elif info.name in blocked or not (info.builtin or allowed is None or info.name in allowed):
            info.status = "disabled"
            infos[info.name] = info
        else:
            try:
                obj = load()
            except (Exception, SystemExit) as err:
                infos[info.name] = info
                plugins._fail(info.name, "import", err)
                continue
            register(info, obj)
    for name, local in extra:
        module_name = getattr(local, "__name__", type(local).__name__)
        register(PluginInfo(name, module_name, f"(local {name})", "0", builtin=False), local)
    _check_unknown_hooks(pm, plugins)
    return plugins


def _dist_identity(dist: Any) -> tuple[str, str]:
    """A distribution's name and version from its METADATA headers (``dist.name``/``.version`` each
    parse all of METADATA: with many plugins, a fifth of the discovery cost of ``visionkit --help``)."""
    if dist is None:
        return "?", "?"
    try:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    except OSError:
        text = ""
    headers: dict[str, str] = {}
    for line in itertools.takewhile(str.strip, text.splitlines()):  # the headers end at a blank line
        key, sep, value = line.partition(":")
        if sep:
            headers.setdefault(key.strip().lower(), value.strip())
    if "name" in headers and "version" in headers:
        return headers["name"], headers["version"]
    return str(dist.name or "?"), str(dist.version or "?")


_CURRENT: Plugins | None = None


def current_plugins() -> Plugins | None:
    """The plugins this process loaded, if it has (never loads them)."""
    return _CURRENT


def get_plugins(**kwargs: Any) -> Plugins:
    """The process-wide plugin manager (created on first call; ``kwargs`` as load_plugins)."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = load_plugins(**kwargs)
    return _CURRENT


@contextlib.contextmanager
def use_plugins(plugins: Plugins) -> Iterator[Plugins]:
    """Make ``plugins`` the process-wide manager for the duration of a ``with`` block."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, plugins
    try:
        yield plugins
    finally:
        _CURRENT = previous


def set_plugins(plugins: Plugins | None) -> None:
    """Replace the process-wide plugin manager (tests, embedding)."""
    global _CURRENT
    _CURRENT = plugins
