"""Option values converted to a factory's annotations (``--set backbone.drop_path_rate=0.1``).

A factory's keyword arguments are its options. :func:`option_specs` reads each one's type
from its annotation (string annotations are resolved with ``typing.get_type_hints``, one
parameter at a time when a name only exists under ``TYPE_CHECKING``), falling back to the
type of its default; :func:`convert` turns a YAML/``--set`` value into that type or raises
:class:`ConversionError` saying what was expected. Supported: ``int``, ``float``, ``bool``,
``str``, ``Path``, enums, ``X | None``, unions, ``Literal[...]``, ``list``/``tuple``/``set`` of
those (a YAML list or ``a,b,c``) and ``dict``. Other types pass values through unchanged.
Imports nothing heavy.
"""

from __future__ import annotations

import collections.abc as cabc
import enum
import functools
import inspect
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal, Union

_NONE_WORDS = {"none", "null", "~"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_EMPTY = inspect.Parameter.empty
_SIMPLE = {int: ("an int", "ints"), float: ("a float", "floats"), bool: ("true or false", "booleans")}
_SIMPLE.update({str: ("a string", "strings"), Path: ("a path", "paths")})
_LISTS = (list, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set, cabc.MutableSet, cabc.Iterable)
_MAPS = (dict, cabc.Mapping, cabc.MutableMapping)
UNKNOWN = object()
"""The type of an option nothing can be said about (no usable annotation, no usable default)."""


class ConversionError(ValueError):
    """A value does not fit a type; ``expected`` says what would (``"a float"``)."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


@dataclass(frozen=True)
class OptionSpec:
    """One keyword option of a factory and the type its values are converted to."""

    name: str
    target: Any  # the type values convert to; UNKNOWN: passed through unchanged
    annotation: Any  # as written (a string under ``from __future__ import annotations``); _EMPTY if none
    default: Any  # _EMPTY if required
    problem: str | None = None  # why ``target`` is UNKNOWN, for ``plugins check``

    @property
    def required(self) -> bool:
        return self.default is _EMPTY


def option_specs(factory: Any) -> tuple[dict[str, OptionSpec], bool] | None:
    """``factory``'s keyword options and whether it takes ``**kwargs``; ``None`` without a signature."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    hints, globalns = _hints(factory)
    specs: dict[str, OptionSpec] = {}
    for name, param in sig.parameters.items():
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) or name == "self":
            continue
        specs[name] = _spec(name, param, hints, globalns)
    return specs, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _hints(factory: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resolved annotations of ``factory`` (its ``__init__`` for a class) and its module globals."""
    target = factory
    while isinstance(target, functools.partial):
        target = target.func
    if isinstance(target, type):
        target = target.__init__  # type: ignore[misc]
    target = inspect.unwrap(target)
    globalns = dict(getattr(target, "__globals__", None) or {})
    if not globalns:
        module = sys.modules.get(getattr(target, "__module__", "") or "")
        globalns = dict(vars(module)) if module else {}
    try:
        hints = typing.get_type_hints(target, globalns=globalns)
    except Exception:  # one name under TYPE_CHECKING spoils them all: resolve per parameter
        hints = {}
    return hints, globalns


def _spec(name: str, param: inspect.Parameter, hints: dict[str, Any], globalns: dict[str, Any]) -> OptionSpec:
    ann, default = param.annotation, param.default
    problem = None
    resolved: Any = _EMPTY
    if ann is not _EMPTY:
        if name in hints:
            resolved = hints[name]
        elif isinstance(ann, str):
            try:
                resolved = eval(ann, globalns)  # the factory's own annotation text
            except Exception as err:
                problem = f"annotation {ann!r} cannot be resolved ({type(err).__name__}: {err})"
        else:
            resolved = ann
    if resolved is not _EMPTY:
        resolved = _strip_annotated(resolved)
        if supported(resolved):
            return OptionSpec(name, resolved, ann, default)
        problem = f"annotation {type_name(resolved)} is not a type --set values can be converted to"
    from_default = type_of_default(default)
    if from_default is not UNKNOWN:
        return OptionSpec(name, from_default, ann, default)
    if problem is None:
        problem = "no annotation"
        if default is not _EMPTY:
            problem += f" and a default ({default!r}) of no usable type"
    return OptionSpec(name, UNKNOWN, ann, default, problem)


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def type_of_default(default: Any) -> Any:
    """The type a default implies (``0.1`` -> float, ``(1, 2)`` -> tuple[int, ...]); UNKNOWN if none."""
    if default is _EMPTY or default is None:
        return UNKNOWN
    if isinstance(default, enum.Enum):
        return type(default)
    if isinstance(default, PurePath):
        return Path
    for simple in (bool, int, float, str):
        if type(default) is simple:
            return simple
    if isinstance(default, (list, tuple, set, frozenset)):
        kinds = {type(v) for v in default}
        item = kinds.pop() if len(kinds) == 1 else Any
        item = item if item in _SIMPLE else Any
        args = (item, ...) if isinstance(default, tuple) else (item,)
        return types.GenericAlias(type(default), args)
    if isinstance(default, dict):
        return dict
    return UNKNOWN


def supported(tp: Any) -> bool:
    """Whether values can be converted to ``tp`` (and so checked) for ``--set``."""
    tp = _strip_annotated(tp)
    if tp is Any or tp is object or tp is type(None) or tp in _SIMPLE:
        return True
    if isinstance(tp, type) and (issubclass(tp, (enum.Enum, PurePath)) or tp in _LISTS or tp in _MAPS):
        return True
    if tp is tuple:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return True
    if origin in (Union, types.UnionType):  # values of the members it knows are checked; others pass
        return any(supported(a) for a in args if a is not type(None))
    if origin in _LISTS or origin is tuple:
        return all(supported(a) for a in args if a is not Ellipsis)
    if origin in _MAPS:
        return all(supported(a) for a in args)
    return False


def describe(tp: Any) -> str:
    """What a value of ``tp`` looks like, for messages: ``"a float or none"``."""
    tp = _strip_annotated(tp)
    if tp in _SIMPLE:
        return _SIMPLE[tp][0]
    if tp is type(None):
        return "none"
    if tp is Any or tp is object or tp is UNKNOWN:
        return "any value"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        # "none" is left out: messages show the annotation itself (``float | None``) next to this
        return " or ".join(describe(a) for a in args if a is not type(None)) or "none"
    if tp in _MAPS or origin in _MAPS:
        return "a mapping, e.g. {key: value}"
    kind = "tuple" if (tp is tuple or origin is tuple) else "list"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a {kind} of {len(args)} values ({', '.join(describe(a) for a in args)})"
    item = args[0] if args else Any
    if item in _SIMPLE:
        return f"a {kind} of {_SIMPLE[item][1]} (YAML [a, b] or a,b)"
    if item is Any:
        return f"a {kind} (YAML [a, b] or a,b)"
    return f"a {kind} whose items are {describe(item)}"


def convert(value: Any, tp: Any) -> Any:
    """``value`` as a ``tp``; raises :class:`ConversionError` when it cannot be one."""
    tp = _strip_annotated(tp)
    if tp is Any or tp is object or tp is UNKNOWN:
        return value
    if tp is type(None):
        if _is_none(value):
            return None
        raise ConversionError("none")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return _union(value, tp, args)
    if origin is Literal:
        return _literal(value, tp, args)
    if tp is bool:
        return _bool(value)
    if tp is int:
        return _int(value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConversionError(describe(tp))
    if tp is str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)) or _is_date(value):
            return str(value)
        raise ConversionError(describe(tp))
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)) and str(value).strip():
            return tp(value)
        raise ConversionError(describe(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(value, tp)
    if tp in _MAPS or origin in _MAPS:
        return _mapping(value, tp, args)
    if tp is tuple or origin is tuple or tp in _LISTS or origin in _LISTS:
        return _sequence(value, tp, origin or tp, args)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    return value  # a type visionkit cannot convert to: the factory gets the value as given


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)


def _is_date(value: Any) -> bool:
    import datetime

    return isinstance(value, (datetime.date, datetime.time))


def _exact(value: Any, tp: Any) -> bool:
    """``value`` already is a ``tp`` (no conversion needed to pick this union member)."""
    tp = _strip_annotated(tp)
    if tp is float:
        return type(value) is float
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is bool:
        return isinstance(value, bool)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    cls = origin or tp
    if cls in _LISTS:
        cls = list if isinstance(value, list) else (set if cls in (set, frozenset) else list)
    if cls in _MAPS:
        cls = dict
    return isinstance(cls, type) and isinstance(value, cls)


def _union(value: Any, tp: Any, args: tuple[Any, ...]) -> Any:
    if type(None) in args and _is_none(value):
        return None
    members = [a for a in args if a is not type(None)]
    for member in members:
        if _exact(value, member):
            return convert(value, member)
    for member in members:
        try:
            return convert(value, member)
        except ConversionError:
            continue
    if not all(supported(m) for m in members):
        return value  # one member is a type visionkit cannot check: let the factory decide
    raise ConversionError(describe(tp))


def _literal(value: Any, tp: Any, choices: tuple[Any, ...]) -> Any:
    for choice in choices:
        if value == choice and type(value) is type(choice):
            return choice
    if isinstance(value, (str, int, float, bool)):
        text = plain(value)
        for choice in choices:
            if plain(choice) == text:
                return choice
    raise ConversionError(describe(tp))


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ConversionError(describe(bool))


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ConversionError(describe(int))
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = float("nan")
            if number.is_integer():
                return int(number)
    raise ConversionError(describe(int))


def _enum(value: Any, tp: type[enum.Enum]) -> enum.Enum:
    if isinstance(value, tp):
        return value
    for member in tp:
        if value == member.value or (isinstance(value, str) and value in (member.name, plain(member.value))):
            return member
    raise ConversionError(describe(tp))


def _mapping(value: Any, tp: Any, args: tuple[Any, ...]) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ConversionError(describe(tp))
    if len(args) != 2:
        return dict(value)
    try:
        return {convert(k, args[0]): convert(v, args[1]) for k, v in value.items()}
    except ConversionError:
        raise ConversionError(describe(tp)) from None


def _sequence(value: Any, tp: Any, container: Any, args: tuple[Any, ...]) -> Any:
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",")] if value.strip() else []
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    elif isinstance(value, (int, float)):
        items = [value]  # one value for a list of one
    else:
        raise ConversionError(describe(tp))
    try:
        if container is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ConversionError(describe(tp))
            return tuple(convert(v, a) for v, a in zip(items, args, strict=True))
        item = args[0] if args else Any
        converted = [convert(v, item) for v in items]
    except ConversionError:
        raise ConversionError(describe(tp)) from None
    if container is tuple:
        return tuple(converted)
    if container in (set, cabc.Set, cabc.MutableSet):
        return set(converted)
    if container is frozenset:
        return frozenset(converted)
    return converted


def plain(value: Any) -> str:
    """A value as a user would have typed it after ``=`` (``true``, ``null``, ``0.1``, ``[1, 2]``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, enum.Enum):
        return plain(value.value)
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


__all__ = [
    "UNKNOWN",
    "ConversionError",
    "OptionSpec",
    "convert",
    "describe",
    "option_specs",
    "plain",
    "supported",
    "type_name",
]
