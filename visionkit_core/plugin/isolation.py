"""Per-plugin isolation of hook implementations, inside pluggy's own call loop.

pluggy calls every ``HookImpl.function`` itself, in the order it documents (wrappers around
``tryfirst``, plain and ``trylast`` implementations; LIFO by registration within each group;
``firstresult`` hooks stop at the first non-``None`` result). :func:`isolate` replaces that
function with one that runs the plugin's own code through a :data:`Step`, which knows the
plugin and decides what its failure means for the hook (skip it, record it, or stop).

Wrappers are generator functions that drive the plugin's generator with ``next``/``send``/
``throw``: an error the plugin raises before or after its ``yield`` is its own; an
exception raised by the implementations it wraps passes through it unattributed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any, Protocol

import pluggy


class Step(Protocol):
    """Run a piece of a plugin's hook code: ``(True, value)``, or ``(False, None)`` once its error is handled.

    ``phase`` is ``""`` for a plain implementation, else which side of a wrapper's ``yield``
    runs. An exception that *is* ``passthrough`` is never the plugin's: it is re-raised as is.
    """

    def __call__(
        self, phase: str, call: Callable[[], Any], passthrough: BaseException | None = None
    ) -> tuple[bool, Any]: ...


class PerPlugin:
    """A hook argument whose value depends on the plugin that receives it.

    A ``pm.hook`` call passes the same arguments to every implementation; the isolating
    function of each plugin swaps this placeholder for ``value_for(plugin_name)`` (its own
    ``Registrar``, for the registration hooks) before the plugin's code sees it.
    """

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[str], object]) -> None:
        self._make = make

    def value_for(self, plugin: str) -> object:
        return self._make(plugin)


def isolate(impl: pluggy.HookImpl, step: Step) -> None:
    """Make pluggy call ``impl`` through ``step`` (plain, ``wrapper=True`` or ``hookwrapper=True``)."""
    fn = impl.function
    if impl.wrapper:
        isolated = _new_style_wrapper(fn, impl.plugin_name, step)
    elif impl.hookwrapper:
        isolated = _old_style_wrapper(fn, impl.plugin_name, step)
    else:
        isolated = _plain(fn, impl.plugin_name, step)
    # pluggy reads impl.argnames (computed from the original function) to build the
    # positional arguments, and calls impl.function with them: swapping it is enough.
    impl.function = functools.wraps(fn)(isolated)  # type: ignore[misc]


def _bind(
    plugin: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    def own(value: Any) -> Any:
        return value.value_for(plugin) if isinstance(value, PerPlugin) else value

    return tuple(own(a) for a in args), {k: own(v) for k, v in kwargs.items()}


def _plain(fn: Callable[..., Any], plugin: str, step: Step) -> Callable[..., Any]:
    def isolated(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _bind(plugin, args, kwargs)
        ok, value = step("", lambda: fn(*args, **kwargs))
        return value if ok else None

    return isolated


def _new_style_wrapper(fn: Callable[..., Any], plugin: str, step: Step) -> Callable[..., Any]:
    def isolated(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
        args, kwargs = _bind(plugin, args, kwargs)
        ok, gen = step("wrapper, before yield", lambda: _started(fn(*args, **kwargs)))
        if not ok:  # skipped: from here on a wrapper that changes nothing
            return (yield)
        try:
            result = yield
        except BaseException as inner:  # raised by what it wraps: the plugin may handle it
            rethrow = functools.partial(_finished, gen, gen.throw, inner)
            ok, value = step("wrapper, after yield", rethrow, inner)
            if not ok:
                raise
            return value
        ok, value = step("wrapper, after yield", lambda: _finished(gen, gen.send, result))
        return value if ok else result

    return isolated


def _old_style_wrapper(fn: Callable[..., Any], plugin: str, step: Step) -> Callable[..., Any]:
    def isolated(*args: Any, **kwargs: Any) -> Generator[None, pluggy.Result[Any], None]:
        args, kwargs = _bind(plugin, args, kwargs)
        ok, gen = step("hookwrapper, before yield", lambda: _started(fn(*args, **kwargs)))
        outcome = yield
        if ok:
            # outcome.get_result() re-raises the wrapped implementations' error: not the plugin's
            step("hookwrapper, after yield", lambda: _finished(gen, gen.send, outcome), outcome.exception)

    return isolated


def _started(gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    try:
        next(gen)
    except StopIteration:
        raise RuntimeError("the wrapper returned without yielding") from None
    return gen


def _finished(gen: Generator[Any, Any, Any], resume: Callable[[Any], Any], value: Any) -> Any:
    try:
        resume(value)
    except StopIteration as stop:
        return stop.value
    gen.close()
    raise RuntimeError("the wrapper yielded a second time")
