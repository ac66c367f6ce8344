"""The component registry: kinds -> namespaces -> factories, with lazy namespace providers.

A registration stores a *factory* (a callable or a ``"module:attr"`` string), never an
instance, so discovery imports nothing heavy. Names resolve as docs/architecture.md describes;
ambiguity, unknown names and namespace conflicts are errors that say what to do.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import pkgutil
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
from visionkit_core.plugin.names import parse_name

KINDS = ("backbone", "task", "dataset", "callback", "logger")
_LIST_CMD = dict(zip(KINDS, ("models", "tasks", "datasets", "callbacks", "loggers"), strict=True))

Factory = Callable[..., Any] | str


class ComponentLoadError(UsageError):
    """A registered ``"module:attr"`` cannot be imported or names no callable (its error is the cause)."""


class PluginUnavailableError(UnknownNameError):
    """A name in the namespace of an installed plugin that failed to load (or is disabled)."""


def load_object(ref: Factory) -> Any:
    """Turn a ``"module:attr"`` string into the object it names; pass callables through."""
    return pkgutil.resolve_name(ref) if isinstance(ref, str) else ref


def _load_callable(ref: Factory, what: str) -> Callable[..., Any]:
    """``load_object(ref)``, or a :class:`ComponentLoadError` starting with ``what``."""
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
    return repr(ref if isinstance(ref, str) else getattr(ref, "__qualname__", ref))


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
    """One resolved component: where it came from and how to build it.

    ``check`` (datasets): ``check(root, workers, progress) -> report`` for ``visionkit data check``,
    registered apart from the factory so checking data never imports the datamodule (torch).
    """

    kind: str
    namespace: str
    name: str
    factory: Factory
    origin: Origin
    description: str = ""
    check: Factory | None = None

    @property
    def qualname(self) -> str:
        return f"{self.namespace}:{self.name}"

    def load_check(self) -> Callable[..., Any] | None:
        """The data check (see above), imported; ``None`` when it has none."""
        what = f"{self.kind} {self.qualname!r} check from {self.origin.describe()}"
        return None if self.check is None else _load_callable(self.check, what)

    def load(self) -> Callable[..., Any]:
        """Import (if needed) and return the factory callable, or raise a :class:`ComponentLoadError`
        (exit 2) naming this component, its plugin and the string; ``plugins check`` calls it for each."""
        return _load_callable(self.factory, f"{self.kind} {self.qualname!r} from {self.origin.describe()}")


@dataclass(frozen=True)
class NamespaceProvider:
    """Resolves names of one namespace on demand (e.g. every timm model).

    ``resolve(name)`` returns a factory (callable or ``"module:attr"``), or ``None`` for an unknown
    name; ``list_names()`` returns the names, and is called only when this namespace is listed.
    """

    kind: str
    namespace: str
    resolve: Factory
    list_names: Factory | None
    origin: Origin
    description: str = ""

    def lookup(self, name: str) -> Component | None:
        """The component ``namespace:name`` or ``None`` (a failing resolver: :class:`ComponentLoadError`)."""
        what = f"{self.kind} {self.namespace + ':' + name!r} from {self.origin.describe()}"
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

    def _of(self, kind: str) -> tuple[dict[str, dict[str, Component]], dict[str, NamespaceProvider]]:
        """The static namespaces and the providers of ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        return self._static.setdefault(kind, {}), self._providers.setdefault(kind, {})

    def _claim(self, namespace: str, origin: Origin) -> None:
        owner = self._ns_owner.setdefault(namespace, origin)
        if owner.builtin and not origin.builtin:
            # built-ins are committed first and win: the intruder is refused, the namespace keeps working
            raise ConflictError(
                f"namespace {namespace!r} belongs to the built-in {owner.describe()}; {origin.describe()} "
                "cannot add to it: register in your plugin's own namespace"
            )
        if owner.distribution != origin.distribution:
            self._conflicts[namespace] = msg = (
                f"namespace {namespace!r} is claimed by two distributions: "
                f"{owner.distribution} {owner.version} ({owner.plugin!r}) and "
                f"{origin.distribution} {origin.version} ({origin.plugin!r}); "
                "uninstall one of them or block one with --no-plugin NAME"
            )
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
        static, providers = self._of(kind)
        if not name or ":" in name:
            raise UsageError(f"invalid {kind} name {name!r} registered by {origin.describe()}")
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise UsageError(
                f"{origin.describe()} registered {kind} {name!r} with a factory that is neither "
                "callable nor a 'module:attr' string"
            )
        self._claim(namespace, origin)
        names = static.setdefault(namespace, {})
        if name in names:
            raise ConflictError(
                f"{kind} {namespace + ':' + name!r} is registered twice: by "
                f"{names[name].origin.describe()} and by {origin.describe()}"
            )
        if namespace in providers:
            raise ConflictError(
                f"{kind} namespace {namespace!r} is resolved dynamically by "
                f"{providers[namespace].origin.describe()}; {origin.describe()} cannot also add "
                f"{name!r} to it"
            )
        names[name] = comp = Component(kind, namespace, name, factory, origin, description, check)
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
        static, providers = self._of(kind)
        self._claim(namespace, origin)
        if namespace in providers or namespace in static:
            raise ConflictError(
                f"{kind} namespace {namespace!r} is provided twice (second: {origin.describe()})"
            )
        providers[namespace] = NamespaceProvider(kind, namespace, resolve, list_names, origin, description)
        self.by_plugin.setdefault(origin.plugin, []).append(f"{kind} {namespace}:*")

    def mark_unavailable(
        self, namespace: str, plugin: str, reason: str, cause: BaseException | None = None
    ) -> None:
        """Say why ``namespace`` is missing: the installed ``plugin`` that would provide it did not load.

        Its names then raise :class:`PluginUnavailableError` with ``reason`` (``cause`` chained,
        for ``VISIONKIT_DEBUG=1``). A namespace that another plugin does provide is never marked.
        """
        if not any(namespace in self.namespaces(kind) for kind in KINDS):
            self._unavailable.setdefault(namespace, (plugin, reason, cause))

    def _raise_unavailable(self, kind: str, text: str, namespace: str) -> None:
        if namespace in self._unavailable:
            _, reason, cause = self._unavailable[namespace]
            raise PluginUnavailableError(f"{kind} {text!r} is unavailable: {reason}") from cause

    def namespaces(self, kind: str) -> list[str]:
        """Installed namespaces for ``kind`` (static and dynamic)."""
        static, providers = self._of(kind)
        return sorted({*static, *providers})

    def static_components(self, kind: str) -> list[Component]:
        return [c for ns in self._of(kind)[0].values() for c in ns.values()]

    def providers(self, kind: str) -> list[NamespaceProvider]:
        return [p for _, p in sorted(self._of(kind)[1].items())]

    def resolve(self, kind: str, text: str) -> Component:
        """Find the component ``text`` names, or raise an error saying what exists."""
        static, providers = self._of(kind)
        ns, name = parse_name(text)
        installed = ", ".join(self.namespaces(kind)) or "(none)"
        if ns is None:
            comps = self.static_components(kind)
            matches = [c for c in comps if c.name == name]
            if len(matches) > 1:
                options = ", ".join(sorted(c.qualname for c in matches))
                raise AmbiguousNameError(
                    f"{kind} name {name!r} is ambiguous: it is provided as {options}; use the qualified name"
                )
            if not matches:
                namespaces = self.namespaces(kind)
                example = ([n for n in namespaces if n != "visionkit"] + namespaces + ["ns"])[0]
                failed = ", ".join(sorted({repr(p) for p, _, _ in self._unavailable.values()}))
                raise UnknownNameError(
                    f"unknown {kind} {name!r}"
                    + _did_you_mean(name, [c.name for c in comps])
                    + f". Installed {kind} namespaces: {installed} (use 'ns:name', e.g. '{example}:{name}'); "
                    f"see `visionkit {_LIST_CMD[kind]} list`"
                    + (f". Installed plugins that did not load may provide it: {failed}" if failed else "")
                )
            ns = matches[0].namespace
        if ns in self._conflicts:
            raise ConflictError(self._conflicts[ns])
        if name in static.get(ns, {}):
            return static[ns][name]
        if ns in providers:
            found = providers[ns].lookup(name)
            if found is not None:
                return found
            try:
                known = providers[ns].names()
            except Exception:  # listing is a courtesy in an error message; never mask the real error
                known = []
            raise UnknownNameError(
                f"unknown {kind} {text!r}: namespace {ns!r} has no {name!r}"
                + _did_you_mean(name, known)
                + f"; list them with `visionkit {_LIST_CMD[kind]} list --namespace {ns}`"
            )
        if ns in static:
            raise UnknownNameError(
                f"unknown {kind} {text!r}: namespace {ns!r} has no {name!r}"
                + _did_you_mean(name, static[ns])
                + f"; available: {', '.join(sorted(static[ns]))}"
            )
        self._raise_unavailable(kind, text, ns)
        close = difflib.get_close_matches(ns, self.namespaces(kind), n=1)
        raise UnknownNameError(
            f"unknown {kind} namespace {ns!r} in {text!r}; installed {kind} namespaces: {installed}"
            + (f". Did you mean '{close[0]}:{name}'?" if close else "")
            + ". A plugin may provide it: pip install visionkit-<plugin>"
        )

    def listing(self, kind: str, namespace: str | None = None, pattern: str | None = None) -> list[Component]:
        """Components of ``kind``. Dynamic namespaces are listed only when asked for by name."""
        static, providers = self._of(kind)
        if namespace is not None and namespace not in self.namespaces(kind):
            self._raise_unavailable(kind, f"{namespace}:*", namespace)
            raise UnknownNameError(
                f"unknown {kind} namespace {namespace!r}; installed: {', '.join(self.namespaces(kind))}"
            )
        out = [c[n] for ns, c in sorted(static.items()) if namespace in (None, ns) for n in sorted(c)]
        if namespace in providers:
            p = providers[namespace]
            out += [Component(kind, p.namespace, n, p.resolve, p.origin, p.description) for n in p.names()]
        if pattern:
            out = [c for c in out if fnmatch.fnmatch(c.name, pattern) or fnmatch.fnmatch(c.qualname, pattern)]
        return out


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
        add = self._registry.add
        self._pending.append(
            functools.partial(add, self.kind, namespace, bare, factory, self.origin, description, check)
        )

    def add_namespace(
        self, namespace: str, resolve: Factory, list_names: Factory | None = None, *, description: str = ""
    ) -> None:
        """Register a lazy provider for every ``namespace:*`` name (see NamespaceProvider)."""
        parse_name(f"{namespace}:x")  # validates the namespace spelling now, inside the hook
        self._namespaces.add(namespace)
        add = self._registry.add_namespace
        self._pending.append(
            functools.partial(add, self.kind, namespace, resolve, list_names, self.origin, description)
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


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    found = difflib.get_close_matches(word, sorted(set(candidates)), n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(found)}?)" if found else ""
