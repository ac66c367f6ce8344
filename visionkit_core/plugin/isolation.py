"""Per-plugin isolation of hook implementations, inside pluggy's own call loop (docs/hooks.md).

:func:`isolate` makes pluggy run a plugin's code through a :data:`Step`, which decides what its
failure means for the hook. A wrapper's error before or after its ``yield`` is its own; one
raised by the implementations it wraps passes through it unattributed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any

import pluggy

#: ``step(phase, call, inner=None) -> (ok, value)`` runs ``call``, a piece of a plugin's hook code
#: (``phase``: ``""`` for a plain implementation, else the side of a wrapper's ``yield``), and gives
#: ``(False, None)`` once its error is handled; an error that *is* ``inner`` is re-raised.
Step = Callable[..., tuple[bool, Any]]


class PerPlugin(functools.partial):  # type: ignore[type-arg]
    """A hook argument whose value depends on the plugin receiving it: ``arg(plugin_name)``."""


def isolate(impl: pluggy.HookImpl, step: Step) -> None:
    """Make pluggy call ``impl`` (plain, ``wrapper=True`` or ``hookwrapper=True``) through ``step``."""
    fn, plugin = impl.function, impl.plugin_name

    def call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        def own(value: Any) -> Any:
            return value(plugin) if isinstance(value, PerPlugin) else value

        return fn(*map(own, args), **{k: own(v) for k, v in kwargs.items()})

    def plain(*args: Any, **kwargs: Any) -> Any:
        return step("", lambda: call(args, kwargs))[1]

    def wrapper(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
        ok, gen = step("wrapper, before yield", lambda: _started(call(args, kwargs)))
        if not ok:  # skipped: from here on a wrapper that changes nothing
            return (yield)
        try:
            result = yield
        except BaseException as inner:  # raised by what it wraps: the plugin may handle it
            ok, value = step(
                "wrapper, after yield", functools.partial(_finished, gen, gen.throw, inner), inner
            )
            if not ok:
                raise
            return value
        ok, value = step("wrapper, after yield", lambda: _finished(gen, gen.send, result))
        return value if ok else result

    def hookwrapper(*args: Any, **kwargs: Any) -> Generator[None, pluggy.Result[Any], None]:
        ok, gen = step("hookwrapper, before yield", lambda: _started(call(args, kwargs)))
        outcome = yield
        if ok:  # outcome.get_result() re-raises the wrapped implementations' error: not the plugin's
            step("hookwrapper, after yield", lambda: _finished(gen, gen.send, outcome), outcome.exception)

    isolated = wrapper if impl.wrapper else hookwrapper if impl.hookwrapper else plain
    # pluggy builds the arguments from impl.argnames (read from the original function): swapping is enough
    impl.function = functools.wraps(fn)(isolated)  # type: ignore[misc]


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
