"""Option values checked and converted against a factory's annotations by pydantic (a lax ``TypeAdapter``,
as LightningCLI does with jsonargparse: ``"1e-3"`` -> 0.001, ``"yes"`` -> True).

An option's type is its annotation, resolved one parameter at a time (a name only imported under
``TYPE_CHECKING`` spoils only its own option), else its default's type; values of a type pydantic
cannot validate pass through unchanged.
"""

from __future__ import annotations

import collections.abc as cabc
import datetime
import enum
import functools
import inspect
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal, Union

_EMPTY = inspect.Parameter.empty
_NOUNS = {int: "int", float: "float", bool: "boolean", str: "string", Path: "path"}
_SEQUENCES = (list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set, cabc.MutableSet)
_MAPS = (dict, cabc.Mapping, cabc.MutableMapping)
UNKNOWN: Any = object()  # the type of an option nothing can be said about: its values pass through


class ConversionError(ValueError):
    """A value does not fit a type; the message says what would (``"a float"``)."""


@dataclass(frozen=True)
class OptionSpec:
    """One keyword option of a factory: the type its values convert to, and why that is UNKNOWN."""

    name: str
    target: Any
    default: Any  # _EMPTY if required
    problem: str | None = None

    @property
    def required(self) -> bool:
        return self.default is _EMPTY


def option_specs(factory: Any) -> tuple[dict[str, OptionSpec], bool] | None:
    """``factory``'s keyword options and whether it takes ``**kwargs``; ``None`` without a signature."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    target = factory
    while isinstance(target, functools.partial):
        target = target.func
    target = inspect.unwrap(target.__init__ if isinstance(target, type) else target)  # type: ignore[misc]
    module = sys.modules.get(getattr(target, "__module__", "") or "")
    globalns = getattr(target, "__globals__", None) or (vars(module) if module else {})
    specs = {
        name: _spec(name, param, globalns)
        for name, param in sig.parameters.items()
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and name != "self"
    }
    return specs, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _spec(name: str, param: inspect.Parameter, globalns: dict[str, Any]) -> OptionSpec:
    ann, default = param.annotation, param.default
    problem = "no annotation"
    if ann is not _EMPTY:
        try:
            tp = eval(ann, globalns) if isinstance(ann, str) else ann  # the factory's own annotation
        except Exception as err:
            problem = f"annotation {ann!r} cannot be resolved ({type(err).__name__}: {err})"
        else:
            if default is None and tp is not Any and type(None) not in typing.get_args(tp):
                tp = typing.Optional[tp]  # `x: float = None` takes null  # noqa: UP045
            if supported(tp):
                return OptionSpec(name, tp, default)
            problem = f"annotation {type_name(tp)} is not a type --set values can be converted to"
    target = type_of_default(default)
    if problem == "no annotation" and default is not _EMPTY:
        problem += f" and a default ({default!r}) of no usable type"
    return OptionSpec(name, target, default, problem if target is UNKNOWN else None)


def type_of_default(default: Any) -> Any:
    """The type a default implies (``0.1`` -> float, ``(1, 2)`` -> tuple[int, ...]); UNKNOWN if none."""
    if isinstance(default, enum.Enum) or type(default) in _NOUNS:
        return type(default)
    if isinstance(default, PurePath):
        return Path
    if isinstance(default, (list, tuple, set, frozenset)):
        kinds = {type(v) for v in default}
        item = kinds.pop() if len(kinds) == 1 and next(iter(kinds)) in _NOUNS else Any
        return types.GenericAlias(type(default), (item, ...) if isinstance(default, tuple) else (item,))
    return dict if isinstance(default, dict) else UNKNOWN


@functools.lru_cache(maxsize=512)
def _adapter(tp: Any, arbitrary: bool = True) -> Any:
    """A lax ``TypeAdapter`` for ``tp`` (``arbitrary``: other classes checked with isinstance), or None."""
    from pydantic import ConfigDict, TypeAdapter

    try:
        return TypeAdapter(
            tp, config=ConfigDict(arbitrary_types_allowed=arbitrary, coerce_numbers_to_str=True)
        )
    except Exception:
        return None


def supported(tp: Any) -> bool:
    """Whether command-line values convert to ``tp``, or to one member of a union (values of the others,
    such as a Lightning ``Profiler`` instance, are checked with isinstance)."""
    members = [m for m in _members(tp) if m is not type(None)] or [tp]
    try:
        return tp is not UNKNOWN and any(_adapter(m, arbitrary=False) is not None for m in members)
    except TypeError:  # an unhashable annotation object
        return False


def _members(tp: Any) -> list[Any]:
    """The members of a union (``Annotated`` stripped), or ``[tp]``."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _is_sequence(tp: Any) -> bool:
    return tp in _SEQUENCES or typing.get_origin(tp) in _SEQUENCES


def _command_line(value: Any, tp: Any) -> Any:
    """Spellings pydantic does not read: ``none``, ``a,b,c``, an enum by name, a bool or date as a str."""
    members = _members(tp)
    if any(m is Any or m is object for m in members):
        return value
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "~") and type(None) in members:
        return None
    for member in members:
        if typing.get_origin(member) is Literal and value not in typing.get_args(member):
            value = next((c for c in typing.get_args(member) if plain(c) == plain(value)), value)
        elif isinstance(member, enum.EnumMeta) and isinstance(value, str) and value in member.__members__:
            return member.__members__[value]
    if str in members and isinstance(value, (datetime.date, datetime.time)):
        return str(value)  # YAML reads 2024-01-01 as a date
    if isinstance(value, bool) and bool not in members:
        if str in members:
            return "true" if value else "false"
        raise ConversionError(describe(tp))  # pydantic would read True as 1
    if str not in members and any(_is_sequence(m) for m in members):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (int, float)) and not {int, float} & set(members):
            return [value]  # one value for a list of one
    return value


def convert(value: Any, tp: Any) -> Any:
    """``value`` as a ``tp``; raises :class:`ConversionError` when it cannot be one."""
    adapter = _adapter(tp) if supported(tp) else None
    if adapter is None:
        return value  # a type visionkit cannot check: the factory gets the value as given
    from pydantic import ValidationError

    try:
        return adapter.validate_python(_command_line(value, tp))
    except ValidationError:
        raise ConversionError(describe(tp)) from None


def describe(tp: Any) -> str:
    """What a value of ``tp`` looks like, for messages (``"a float"``; ``None`` left out)."""
    members = [m for m in _members(tp) if m is not type(None)]
    if len(members) != 1:
        return " or ".join(describe(m) for m in members) or "none"
    tp = members[0]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _NOUNS:
        return "true or false" if tp is bool else f"{'an' if tp is int else 'a'} {_NOUNS[tp]}"
    if origin is Literal or isinstance(tp, enum.EnumMeta):
        return "one of " + ", ".join(repr(a) for a in (args or [m.value for m in tp]))
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path"
    if tp in _MAPS or origin in _MAPS:
        return "a mapping, e.g. {key: value}"
    if _is_sequence(tp):
        items = f" of {_NOUNS[args[0]]}s" if args and args[0] in _NOUNS else ""
        return f"a {'tuple' if tuple in (tp, origin) else 'list'}{items} (YAML [a, b] or a,b)"
    return type_name(tp)


def plain(value: Any) -> str:
    """A value as a user would have typed it after ``=`` (``true``, ``null``, ``0.1``, ``[1, 2]``)."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{plain(k)}: {plain(v)}" for k, v in value.items()) + "}"
    return str(value)


def type_name(tp: Any) -> str:
    """An annotation as a user would write it: ``float | None``, ``Literal['a', 'b']``."""
    if isinstance(tp, type):
        return tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
    return str(tp).replace("typing.", "")
