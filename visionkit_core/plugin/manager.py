"""Build the pluggy PluginManager: built-in plugins plus the ``visionkit`` entry points.

Every plugin is imported and registered inside its own ``try``, and every hook is called
through ``pm.hook`` with each implementation isolated (``isolation.py``), so pluggy's
``tryfirst``/``trylast``/wrapper order holds while a broken plugin is recorded (name,
distribution, version, hook, error), reported once and skipped, and every command keeps
working. ``Plugins`` is the typed facade the rest of visionkit uses; nothing outside this
module touches ``pm.hook`` directly.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import IO, TYPE_CHECKING, Any

import pluggy

from visionkit_core.errors import PluginLoadError
from visionkit_core.plugin import hookspecs
from visionkit_core.plugin.isolation import PerPlugin, isolate
from visionkit_core.plugin.registry import KINDS, Origin, Registrar, Registry

if TYPE_CHECKING:
    from pathlib import Path

    import typer

    from visionkit_core.plugin.contract import TaskSpec
    from visionkit_core.run.config import RunConfig

ENTRY_POINT_GROUP = "visionkit"

#: The built-in plugins, registered through the same hooks as third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "visionkit_torchvision.plugin",
    "visionkit_timm.plugin",
    "visionkit_classification.plugin",
    "visionkit_segmentation.plugin",
    "visionkit_detection.plugin",
    "visionkit_instance_segmentation.plugin",
    "visionkit_keypoints.plugin",
    "visionkit_imagefolder.plugin",
    "visionkit_loggers.plugin",
    "visionkit_callbacks.plugin",
    "visionkit_wandb_images.plugin",
    "visionkit_devtools.plugin",
    "visionkit_sweep.plugin",
    "visionkit_serve.plugin",
    "visionkit_export.plugin",
    "visionkit_data.plugin",
)

_REGISTER_HOOKS = {
    "backbone": "visionkit_register_backbones",
    "task": "visionkit_register_tasks",
    "dataset": "visionkit_register_datasets",
    "callback": "visionkit_register_callbacks",
    "logger": "visionkit_register_loggers",
}
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
        self._build: _Build | None = None  # while the registration hooks run
        self._app: typer.Typer | None = None  # while visionkit_add_commands runs

    # -- errors -----------------------------------------------------------------------
    def _fail(self, name: str, what: str, err: BaseException) -> None:
        info = self.infos[name]
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        message = f"{what}: {type(err).__name__}: {first}".rstrip(": ")
        if message not in info.errors:
            info.errors.append(message)
        if info.cause is None:
            info.cause = err
        info.status = "failed"
        if self.strict:
            raise PluginLoadError(self._describe_error(info)) from err

    @staticmethod
    def _describe_error(info: PluginInfo) -> str:
        return f"plugin {info.name!r} ({info.distribution} {info.version}) failed: " + "; ".join(info.errors)

    @property
    def failed(self) -> list[PluginInfo]:
        return [i for i in self.infos.values() if i.errors]

    def report_errors(self, stream: IO[str] | None = None) -> None:
        """Print each plugin failure once, as a one-line warning on stderr."""
        stream = stream or sys.stderr
        for info in self.failed:
            key = info.name + "|".join(info.errors)
            if key in self._reported:
                continue
            self._reported.add(key)
            print(
                f"visionkit: warning: {self._describe_error(info)}; it was skipped "
                "(set VISIONKIT_STRICT_PLUGINS=1 to make this fatal, --no-plugin "
                f"{info.name} to silence it)",
                file=stream,
            )

    # -- hook calls -------------------------------------------------------------------
    # Every call goes through pm.hook, so pluggy orders it (tryfirst / plain / trylast, LIFO
    # by registration within each, wrappers around all). Each implementation was wrapped by
    # isolation.isolate() when its plugin was registered; _step below is its policy.

    def _isolate(self, name: str) -> None:
        """Route every hook implementation of plugin ``name`` through :meth:`_step`."""
        plugin = self.pm.get_plugin(name)
        for caller in self.pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    isolate(impl, functools.partial(self._step, name, caller.name))

    def _step(
        self,
        plugin: str,
        hook: str,
        phase: str,
        call: Callable[[], Any],
        passthrough: BaseException | None = None,
    ) -> tuple[bool, Any]:
        """Run one piece of ``plugin``'s implementation of ``hook`` under that hook's failure policy."""
        build = self._build
        if hook in _REGISTRATION and build is not None and plugin in build.raised:
            return False, None  # an earlier registration hook of this plugin raised: skip all of it
        app = self._app if hook == "visionkit_add_commands" else None
        before = (list(app.registered_commands), list(app.registered_groups)) if app is not None else None
        try:
            value = call()
            if app is not None and before is not None:
                _build_new_commands(app, *before)
            if not phase:
                _check_result(hook, value)
            return True, value
        except Exception as err:
            if err is passthrough:
                raise
            if app is not None and before is not None:
                app.registered_commands[:], app.registered_groups[:] = before
            self._hook_failed(plugin, hook, f"{hook} ({phase})" if phase else hook, err)
            return False, None

    def _hook_failed(self, plugin: str, hook: str, what: str, err: Exception) -> None:
        """Apply ``hook``'s policy to ``plugin``'s error (see docs/hooks.md, "Isolation")."""
        info = self.infos[plugin]
        if hook == "visionkit_configure_trainer":
            raise PluginLoadError(
                f"plugin {info.name!r} ({info.distribution} {info.version}) failed in "
                f"{what}: {type(err).__name__}: {err}"
            ) from err
        if hook in _REGISTRATION:
            if self._build is not None:
                self._build.raised.add(plugin)  # its staged registrations are dropped
            self._fail(plugin, what, err)
        elif hook == "visionkit_add_commands":
            self._fail(plugin, what, err)
            self.skip(plugin)  # pluggy called this hook with a copy of the impl list: safe now
        else:
            self._fail(plugin, what, err)
            self.report_errors()

    def skip(self, name: str) -> None:
        """Unregister a failed plugin: none of its hooks runs from now on (as if never imported).

        A registry built with it is dropped and rebuilt, without it, on next use.
        """
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        if name in self.infos:
            self.infos[name].registered = []
        self._registry = None

    @property
    def registry(self) -> Registry:
        """The registry, filled by every plugin's registration hooks on first use.

        Two phases. Each registration hook is called through pluggy (kind by kind, in
        pluggy's order); every plugin's implementation receives its own staging
        ``Registrar``. A plugin whose hook raises is skipped *entirely*, like one that failed
        to import, so none of its hooks' registrations apply. Then the staged registrations
        of the others are committed in *registration* order (built-ins first, then entry
        points, then ``extra``), whatever order pluggy called them in: conflicts are recorded
        on the plugin that came second (and resolving that name is an error), built-ins win.
        Namespaces of installed plugins that did not load are marked, so asking for one of
        their names says why it is missing.
        """
        if self._registry is None:
            registry = Registry()
            build = _Build(registry, self.infos)
            self._build = build
            try:
                for kind in KINDS:
                    hook = getattr(self.pm.hook, _REGISTER_HOOKS[kind])
                    hook(registry=PerPlugin(functools.partial(build.registrar, kind)))
            finally:
                self._build = None
            for name in build.raised:
                self.skip(name)
            order = list(self.infos)
            for kind in KINDS:
                for name, registrar in sorted(build.staged[kind].items(), key=lambda i: order.index(i[0])):
                    self.infos[name].namespaces |= registrar.staged_namespaces
                    if name in build.raised:
                        continue
                    for conflict in registrar.commit():
                        self._fail(name, _REGISTER_HOOKS[kind], conflict)
            for name, regs in registry.by_plugin.items():
                if name in self.infos:
                    self.infos[name].registered = regs
            self._mark_unavailable(registry)
            self._registry = registry
        return self._registry

    def _mark_unavailable(self, registry: Registry) -> None:
        for info in self.infos.values():
            if info.status not in ("failed", "disabled") or self.pm.get_plugin(info.name) is not None:
                continue  # loaded (perhaps with a conflict): its real registrations speak for it
            namespaces = set(info.namespaces) | (set() if info.builtin else {info.name})
            for namespace in sorted(namespaces):
                registry.mark_unavailable(namespace, info.name, info.unavailable_reason(), info.cause)

    def add_commands(self, app: typer.Typer) -> None:
        """Let every plugin add its CLI sub-commands.

        Each plugin's new commands are built right away (Typer resolves their annotations
        only then), so one whose hook raises *or* whose commands cannot be built is removed
        again and skipped, instead of breaking every ``visionkit`` command later.
        """
        self._app = app
        try:
            self.pm.hook.visionkit_add_commands(app=app)
        finally:
            self._app = None

    def configure_trainer(self, trainer_kwargs: dict[str, Any], run: RunConfig) -> None:
        """Let every plugin adjust the Trainer arguments; a failure here stops the run."""
        self.pm.hook.visionkit_configure_trainer(trainer_kwargs=trainer_kwargs, run=run)

    # -- contract hooks: a failing plugin is reported once and skipped ------------------
    def claim_data(self, path: Path, task: str | None = None) -> str | None:
        """The dataset name a plugin claims ``path`` for in a run of ``task`` (``visionkit_claim_data``)."""
        result = self.pm.hook.visionkit_claim_data(path=path, task=task)
        return str(result) if result is not None else None

    def default_callbacks(self, stage: str, run_dir: Path | None, task: TaskSpec) -> list[Any]:
        """Every plugin's default callbacks for a Trainer of ``stage``, in hook calling order."""
        out: list[Any] = []
        for result in self.pm.hook.visionkit_default_callbacks(stage=stage, run_dir=run_dir, task=task):
            out.extend(result)
        return out

    def progress_bar(self, stage: str) -> Any | None:
        """The progress callback for a Trainer of ``stage`` (``visionkit_progress_bar``), or ``None``."""
        return self.pm.hook.visionkit_progress_bar(stage=stage)


class _Build:
    """One registry build: each plugin's staging Registrar per kind, and who raised."""

    def __init__(self, registry: Registry, infos: dict[str, PluginInfo]) -> None:
        self.registry = registry
        self.infos = infos
        self.staged: dict[str, dict[str, Registrar]] = {kind: {} for kind in KINDS}
        self.raised: set[str] = set()

    def registrar(self, kind: str, plugin: str) -> Registrar:
        """The Registrar bound to ``plugin`` for ``kind`` (one per plugin, however many impls)."""
        if plugin not in self.staged[kind]:
            info = self.infos[plugin]
            default_ns = "visionkit" if info.builtin else info.name
            self.staged[kind][plugin] = Registrar(self.registry, kind, info.origin, default_ns)
        return self.staged[kind][plugin]


def _check_result(hook: str, value: Any) -> None:
    """Raise (as the plugin's error) unless a plain implementation returned what the caller can use."""
    if value is None:
        return
    if hook == "visionkit_claim_data" and not isinstance(value, str):
        raise TypeError(f"returned {type(value).__name__} {value!r}, not a dataset name (str) or None")
    if hook == "visionkit_default_callbacks" and not isinstance(value, (list, tuple)):
        raise TypeError(f"returned {type(value).__name__}, not a list of callbacks")


def _build_new_commands(app: typer.Typer, commands: list[Any], groups: list[Any]) -> None:
    """Build the commands and groups added to ``app`` since ``commands``/``groups`` (raises if broken)."""
    new_commands = [c for c in app.registered_commands if not any(c is old for old in commands)]
    new_groups = [g for g in app.registered_groups if not any(g is old for old in groups)]
    if not new_commands and not new_groups:
        return
    import typer

    probe = typer.Typer()
    probe.registered_commands = new_commands
    probe.registered_groups = new_groups
    typer.main.get_command(probe)


def _check_unknown_hooks(pm: pluggy.PluginManager, plugins: Plugins) -> None:
    """Report and skip plugins implementing a hook no hookspec defines (usually a typo).

    Uses pluggy's ``check_pending`` (``optionalhook=True`` impls are allowed), which stops
    at the first offender; each offender is recorded, unregistered, and the check repeated.
    """
    known = sorted(n for n in dir(hookspecs) if n.startswith("visionkit_"))
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as err:
            name = pm.get_name(err.plugin)
            if name is None:  # cannot happen for a registered plugin; never loop forever
                raise
            unknown = sorted(c.name for c in pm.get_hookcallers(err.plugin) or [] if not c.has_spec())
            hints = []
            for hook in unknown:
                close = difflib.get_close_matches(hook, known, n=1)
                hints.append(f"{hook!r}" + (f" (did you mean {close[0]}?)" if close else ""))
            plugins.skip(name)
            plugins._fail(
                name,
                "unknown hook",
                pluggy.PluginValidationError(err.plugin, f"implements unknown hook {', '.join(hints)}"),
            )


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
    if strict is None:
        strict = _env_flag("VISIONKIT_STRICT_PLUGINS")
    blocked_set = set(blocked)

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    plugins = Plugins(pm, infos, strict)

    def register(info: PluginInfo, obj: object) -> None:
        infos[info.name] = info
        try:
            pm.register(obj, name=info.name)
        except Exception as err:
            plugins._fail(info.name, "register", err)
            return
        plugins._isolate(info.name)
        info.hooks = sorted(caller.name for caller in pm.get_hookcallers(obj) or [])

    for module in builtins:
        name = module.split(".")[0]
        info = PluginInfo(name, module, "visionkit", __version__, builtin=True)
        if name in blocked_set:
            info.status = "disabled"
            infos[name] = info
            continue
        try:
            obj = importlib.import_module(module)
        except Exception as err:
            infos[name] = info
            plugins._fail(name, "import", err)
            continue
        register(info, obj)

    if autoload:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist_name, dist_version = _dist_identity(getattr(ep, "dist", None))
            info = PluginInfo(ep.name, ep.value, dist_name, dist_version, builtin=False)
            if ep.name in infos:
                info.errors.append(
                    f"plugin name {ep.name!r} is already taken by {infos[ep.name].distribution}"
                )
                info.status = "failed"
                infos[f"{ep.name}@{info.distribution}"] = info
                continue
            if ep.name in blocked_set or (allowed is not None and ep.name not in allowed):
                info.status = "disabled"
                infos[ep.name] = info
                continue
            infos[ep.name] = info
            try:
                obj = ep.load()
            except (Exception, SystemExit) as err:
                plugins._fail(ep.name, "import", err)
                continue
            register(info, obj)

    for name, local in extra:
        module_name = getattr(local, "__name__", type(local).__name__)
        register(PluginInfo(name, module_name, f"(local {name})", "0", builtin=False), local)

    _check_unknown_hooks(pm, plugins)
    return plugins


def _dist_identity(dist: Any) -> tuple[str, str]:
    """A distribution's name and version, read from its METADATA headers.

    ``dist.name`` and ``dist.version`` each run the full e-mail parser over METADATA; with
    many plugins installed that was a fifth of the discovery cost of ``visionkit --help``.
    """
    if dist is None:
        return "?", "?"
    try:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    except OSError:
        text = ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key in ("name", "version") and key not in found:
            found[key] = value.strip()
            if len(found) == 2:
                return found["name"], found["version"]
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
