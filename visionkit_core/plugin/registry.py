"""The component registry: kinds -> namespaces -> factories, with lazy namespace providers.

A registration stores a *factory* (a callable or a ``"module:attr"`` string), never an
instance, so discovery imports nothing heavy. Names resolve as described in DESIGN.md:
``ns:name`` goes to that namespace; a bare name is looked up among statically registered
names; ambiguity, unknown names and namespace conflicts are errors that say what to do.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from visionkit_core.errors import (
    AmbiguousNameError,
    ConflictError,
    UnknownNameError,
    UsageError,
    VisionkitError,
)
from visionkit_core.plugin.names import parse_name, qualify

KINDS = ("backbone", "task", "dataset", "callback", "logger")
_PLURAL = {
    "backbone": "models",
    "task": "tasks",
    "dataset": "datasets",
    "callback": "callbacks",
    "logger": "loggers",
}

Factory = Callable[..., Any] | str


class ComponentLoadError(UsageError):
    """A registered ``"module:attr"`` string cannot be imported (or names no callable).

    The message names the component, the plugin and distribution that registered it, and
    the string; the import error is the ``__cause__``.
    """


class PluginUnavailableError(UnknownNameError):
    """A name in the namespace of an installed plugin that failed to load (or is disabled)."""


def load_object(ref: Factory) -> Any:
    """Turn a ``"module:attr"`` string into the object it names; pass callables through."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def _load_callable(ref: Factory, what: str) -> Callable[..., Any]:
    """``load_object(ref)``, as a :class:`ComponentLoadError` starting with ``what`` when it fails."""
    try:
        obj = load_object(ref)
    except VisionkitError:
        raise  # e.g. a MissingDependencyError raised on purpose while importing
    except Exception as err:
        raise ComponentLoadError(f"{what}: cannot import {_show(ref)}: {_error_text(err)}") from err
    if not callable(obj):
        raise ComponentLoadError(f"{what}: {_show(ref)} is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


def _show(ref: Factory) -> str:
    return repr(ref) if isinstance(ref, str) else repr(getattr(ref, "__qualname__", ref))


def _error_text(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


@dataclass(frozen=True)
class Origin:
    """Which plugin (and distribution) supplied a component."""

    plugin: str
    distribution: str
    version: str
    builtin: bool = False

    def describe(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class Component:
    """One resolved component: where it came from and how to build it."""

    kind: str
    namespace: str
    name: str
    factory: Factory
    origin: Origin
    description: str = ""
    #: datasets: ``check(root, workers, progress) -> report`` for ``visionkit data check``,
    #: registered apart from the factory so checking data never imports the datamodule (torch)
    check: Factory | None = None

    @property
    def qualname(self) -> str:
        return qualify(self.namespace, self.name)

    def load_check(self) -> Callable[..., Any] | None:
        """The component's data check (see :attr:`check`), imported; ``None`` when it has none."""
        if self.check is None:
            return None
        what = f"{self.kind} {self.qualname!r} check from {self.origin.describe()}"
        return _load_callable(self.check, what)

    def load(self) -> Callable[..., Any]:
        """Import (if needed) and return the factory callable.

        Raises :class:`ComponentLoadError` (a usage error, exit 2) naming this component, its
        plugin and the string when a ``"module:attr"`` factory cannot be imported or does not
        name a callable; ``visionkit plugins check`` calls this for every registration.
        """
        return _load_callable(self.factory, f"{self.kind} {self.qualname!r} from {self.origin.describe()}")


@dataclass(frozen=True)
class NamespaceProvider:
    """Resolves names of one namespace on demand (e.g. every timm model).

    ``resolve(name)`` returns a factory (callable or ``"module:attr"``) or ``None`` when
    the name is unknown; ``list_names()`` returns the names, and is only called when a
    listing of this namespace is asked for.
    """

    kind: str
    namespace: str
    resolve: Factory
    list_names: Factory | None
    origin: Origin
    description: str = ""

    def lookup(self, name: str) -> Component | None:
        """The component ``namespace:name``, or ``None`` when the resolver does not know it.

        A resolver that cannot be imported, or raises, is a :class:`ComponentLoadError`
        naming the plugin (errors visionkit raises on purpose pass through unchanged).
        """
        what = f"{self.kind} {qualify(self.namespace, name)!r} from {self.origin.describe()}"
        resolve = _load_callable(self.resolve, what)
        try:
            factory = resolve(name)
        except VisionkitError:
            raise
        except Exception as err:
            raise ComponentLoadError(
                f"{what}: its namespace resolver {_show(self.resolve)} raised {_error_text(err)}"
            ) from err
        if factory is None:
            return None
        return Component(self.kind, self.namespace, name, factory, self.origin, self.description)

    def names(self) -> list[str]:
        if self.list_names is None:
            return []
        what = f"{self.kind} namespace {self.namespace!r} from {self.origin.describe()}"
        return sorted(_load_callable(self.list_names, what)())


@dataclass
class Registry:
    """All components of all kinds, and which plugin owns which namespace."""

    _static: dict[str, dict[str, dict[str, Component]]] = field(default_factory=dict)
    _providers: dict[str, dict[str, NamespaceProvider]] = field(default_factory=dict)
    _ns_owner: dict[str, Origin] = field(default_factory=dict)
    _conflicts: dict[str, str] = field(default_factory=dict)
    _unavailable: dict[str, tuple[str, str, BaseException | None]] = field(default_factory=dict)
    by_plugin: dict[str, list[str]] = field(default_factory=dict)

    # -- registration -------------------------------------------------------------
    def _claim(self, namespace: str, origin: Origin) -> None:
        owner = self._ns_owner.setdefault(namespace, origin)
        if owner.builtin and not origin.builtin:
            # built-ins are committed first and win: the intruder is refused (and reported),
            # the namespace keeps working instead of becoming a conflict
            raise ConflictError(
                f"namespace {namespace!r} belongs to the built-in plugin {owner.plugin!r} "
                f"({owner.distribution} {owner.version}); {origin.describe()} cannot add to it: "
                "register in your plugin's own namespace"
            )
        if owner.distribution != origin.distribution:
            msg = (
                f"namespace {namespace!r} is claimed by two distributions: "
                f"{owner.distribution} {owner.version} ({owner.plugin!r}) and "
                f"{origin.distribution} {origin.version} ({origin.plugin!r}); "
                "uninstall one of them or block one with --no-plugin NAME"
            )
            self._conflicts[namespace] = msg
            raise ConflictError(msg)

    def add(
        self,
        kind: str,
        namespace: str,
        name: str,
        factory: Factory,
        origin: Origin,
        description: str = "",
        check: Factory | None = None,
    ) -> Component:
        """Register one static component; duplicates are errors, never overwrites."""
        _check_kind(kind)
        if not name or ":" in name:
            raise UsageError(f"invalid {kind} name {name!r} registered by {origin.describe()}")
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise UsageError(
                f"{origin.describe()} registered {kind} {name!r} with a factory that is neither "
                "callable nor a 'module:attr' string"
            )
        self._claim(namespace, origin)
        names = self._static.setdefault(kind, {}).setdefault(namespace, {})
        if name in names:
            first = names[name].origin
            raise ConflictError(
                f"{kind} {qualify(namespace, name)!r} is registered twice: by {first.describe()} "
                f"and by {origin.describe()}"
            )
        if namespace in self._providers.get(kind, {}):
            raise ConflictError(
                f"{kind} namespace {namespace!r} is resolved dynamically by "
                f"{self._providers[kind][namespace].origin.describe()}; {origin.describe()} "
                f"cannot also add {name!r} to it"
            )
        comp = Component(kind, namespace, name, factory, origin, description, check)
        names[name] = comp
        self.by_plugin.setdefault(origin.plugin, []).append(f"{kind} {comp.qualname}")
        return comp

    def add_namespace(
        self,
        kind: str,
        namespace: str,
        resolve: Factory,
        list_names: Factory | None,
        origin: Origin,
        description: str = "",
    ) -> None:
        """Register a provider that resolves every ``namespace:*`` name of ``kind`` lazily."""
        _check_kind(kind)
        self._claim(namespace, origin)
        providers = self._providers.setdefault(kind, {})
        if namespace in providers or namespace in self._static.get(kind, {}):
            raise ConflictError(
                f"{kind} namespace {namespace!r} is provided twice (second: {origin.describe()})"
            )
        providers[namespace] = NamespaceProvider(kind, namespace, resolve, list_names, origin, description)
        self.by_plugin.setdefault(origin.plugin, []).append(f"{kind} {namespace}:*")

    def mark_unavailable(
        self, namespace: str, plugin: str, reason: str, cause: BaseException | None = None
    ) -> None:
        """Say why ``namespace`` is missing: an installed plugin that would provide it did not load.

        ``reason`` is a sentence naming the plugin, its distribution and its error; names in
        ``namespace`` then raise :class:`PluginUnavailableError` with it (``cause`` chained, so
        ``VISIONKIT_DEBUG=1`` shows the plugin's own traceback) instead of "unknown namespace".
        A namespace that another plugin does provide is never marked.
        """
        if any(namespace in self.namespaces(kind) for kind in KINDS):
            return
        self._unavailable.setdefault(namespace, (plugin, reason, cause))

    def _raise_unavailable(self, kind: str, text: str, namespace: str) -> None:
        if namespace in self._unavailable:
            _, reason, cause = self._unavailable[namespace]
            raise PluginUnavailableError(f"{kind} {text!r} is unavailable: {reason}") from cause

    def _unavailable_hint(self) -> str:
        plugins = sorted({plugin for plugin, _, _ in self._unavailable.values()})
        if not plugins:
            return ""
        return f". Installed plugins that did not load may provide it: {', '.join(map(repr, plugins))}"

    # -- lookup ---------------------------------------------------------------------
    def namespaces(self, kind: str) -> list[str]:
        """Installed namespaces for ``kind`` (static and dynamic)."""
        _check_kind(kind)
        return sorted(set(self._static.get(kind, {})) | set(self._providers.get(kind, {})))

    def static_components(self, kind: str) -> list[Component]:
        return [c for ns in self._static.get(kind, {}).values() for c in ns.values()]

    def resolve(self, kind: str, text: str) -> Component:
        """Find the component ``text`` names, or raise an error saying what exists."""
        _check_kind(kind)
        ns, name = parse_name(text)
        if ns is not None:
            if ns in self._conflicts:
                raise ConflictError(self._conflicts[ns])
            static = self._static.get(kind, {}).get(ns)
            if static is not None and name in static:
                return static[name]
            provider = self._providers.get(kind, {}).get(ns)
            if provider is not None:
                found = provider.lookup(name)
                if found is not None:
                    return found
                raise UnknownNameError(
                    f"unknown {kind} {text!r}: namespace {ns!r} has no {name!r}"
                    + _did_you_mean(name, _safe_names(provider))
                    + f"; list them with `visionkit {_list_cmd(kind)} --namespace {ns}`"
                )
            if static is not None:
                raise UnknownNameError(
                    f"unknown {kind} {text!r}: namespace {ns!r} has no {name!r}"
                    + _did_you_mean(name, list(static))
                    + f"; available: {', '.join(sorted(static))}"
                )
            self._raise_unavailable(kind, text, ns)
            raise UnknownNameError(
                f"unknown {kind} namespace {ns!r} in {text!r}; installed {kind} namespaces: "
                f"{', '.join(self.namespaces(kind)) or '(none)'}"
                + (f". Did you mean '{m}:{name}'?" if (m := _closest(ns, self.namespaces(kind))) else "")
                + ". A plugin may provide it: pip install visionkit-<plugin>"
            )
        matches = [c for c in self.static_components(kind) if c.name == name]
        if len(matches) == 1:
            if matches[0].namespace in self._conflicts:
                raise ConflictError(self._conflicts[matches[0].namespace])
            return matches[0]
        if len(matches) > 1:
            options = ", ".join(sorted(c.qualname for c in matches))
            raise AmbiguousNameError(
                f"{kind} name {name!r} is ambiguous: it is provided as {options}; use the qualified name"
            )
        candidates = [c.name for c in self.static_components(kind)]
        raise UnknownNameError(
            f"unknown {kind} {name!r}"
            + _did_you_mean(name, candidates)
            + f". Installed {kind} namespaces: {', '.join(self.namespaces(kind)) or '(none)'}"
            + f" (use 'ns:name', e.g. '{_example_ns(self.namespaces(kind))}:{name}'); "
            f"see `visionkit {_list_cmd(kind)}`" + self._unavailable_hint()
        )

    def listing(self, kind: str, namespace: str | None = None, pattern: str | None = None) -> list[Component]:
        """Components of ``kind``. Dynamic namespaces are listed only when asked for by name."""
        _check_kind(kind)
        out: list[Component] = []
        if namespace is not None and namespace not in self.namespaces(kind):
            self._raise_unavailable(kind, f"{namespace}:*", namespace)
            raise UnknownNameError(
                f"unknown {kind} namespace {namespace!r}; installed: {', '.join(self.namespaces(kind))}"
            )
        for ns, comps in sorted(self._static.get(kind, {}).items()):
            if namespace in (None, ns):
                out.extend(comps[n] for n in sorted(comps))
        if namespace is not None and namespace in self._providers.get(kind, {}):
            prov = self._providers[kind][namespace]
            out.extend(
                Component(kind, namespace, n, prov.resolve, prov.origin, prov.description)
                for n in prov.names()
            )
        if pattern:
            out = [c for c in out if fnmatch.fnmatch(c.name, pattern) or fnmatch.fnmatch(c.qualname, pattern)]
        return out

    def providers(self, kind: str) -> list[NamespaceProvider]:
        return [self._providers[kind][ns] for ns in sorted(self._providers.get(kind, {}))]


class Registrar:
    """What a registration hook receives: a registry view bound to one plugin and kind.

    ``add("name", factory)`` registers in the plugin's default namespace;
    ``add("ns:name", factory)`` in ``ns``. Registrations are staged and committed only when
    the plugin's hook returns, so a hook that raises half-way registers nothing. New
    methods may be added; existing ones keep their signatures.
    """

    def __init__(self, registry: Registry, kind: str, origin: Origin, default_namespace: str) -> None:
        self._registry = registry
        self.kind = kind
        self.origin = origin
        self.default_namespace = default_namespace
        self._pending: list[Callable[[], object]] = []
        self._namespaces: set[str] = set()

    def add(
        self, name: str, factory: Factory, *, description: str = "", check: Factory | None = None
    ) -> None:
        """Register ``factory`` (a callable or ``"module:attr"``) under ``name``.

        Datasets may give ``check``, the function ``visionkit data check`` runs on a folder
        (``check(root, workers, progress)`` returning a report with ``ok``, ``as_dict()`` and
        ``format()``), as a ``"module:attr"`` that imports nothing heavy.
        """
        ns, bare = parse_name(name)
        namespace = ns or self.default_namespace
        self._namespaces.add(namespace)
        self._pending.append(
            lambda: self._registry.add(self.kind, namespace, bare, factory, self.origin, description, check)
        )

    def add_namespace(
        self, namespace: str, resolve: Factory, list_names: Factory | None = None, *, description: str = ""
    ) -> None:
        """Register a lazy provider for every ``namespace:*`` name (see NamespaceProvider)."""
        parse_name(f"{namespace}:x")  # validates the namespace spelling now, inside the hook
        self._namespaces.add(namespace)
        self._pending.append(
            lambda: self._registry.add_namespace(
                self.kind, namespace, resolve, list_names, self.origin, description
            )
        )

    @property
    def staged_namespaces(self) -> frozenset[str]:
        """The namespaces this plugin's registrations name (committed or not)."""
        return frozenset(self._namespaces)

    def commit(self) -> list[Exception]:
        """Apply the staged registrations; return the conflicts met (the rest still apply)."""
        errors: list[Exception] = []
        for op in self._pending:
            try:
                op()
            except (ConflictError, UsageError) as err:
                errors.append(err)
        self._pending.clear()
        return errors


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")


def _closest(word: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    found = difflib.get_close_matches(word, sorted(set(candidates)), n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(found)}?)" if found else ""


def _safe_names(provider: NamespaceProvider) -> list[str]:
    try:
        return provider.names()
    except Exception:  # listing is a courtesy in an error message; never mask the real error
        return []


def _list_cmd(kind: str) -> str:
    return f"{_PLURAL[kind]} list"


def _example_ns(namespaces: list[str]) -> str:
    return next((n for n in namespaces if n != "visionkit"), namespaces[0] if namespaces else "ns")
