"""SPACE.yaml: the search space of a sweep, one entry per config key, checked before any trial runs.

Keys are the ones ``--set`` takes (``lr``, ``augment``, ``backbone.drop_path_rate``,
``callback.early-stopping.patience``); a value is applied to the run's config exactly as
``--set KEY=VALUE`` would be. Entries::

    lr: {type: float, low: 0.0001, high: 0.01, log: true}
    augment: {type: choice, values: [none, basic, randaugment]}
    batch_size: {type: int, low: 16, high: 64, step: 16}

Nothing here imports optuna, torch or Lightning; :meth:`Param.suggest` takes an Optuna trial.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from visionkit_core.errors import ConfigError
from visionkit_core.run.config import OPTION_SECTIONS, RunConfig, apply_mapping, validate

_TYPES = ("float", "int", "choice")
_FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "choice": {"type", "values"},
}
#: config keys a sweep sets itself for every trial
_PER_TRIAL = {"run_dir": "--sweep-dir", "resume": "--resume"}
_NESTED = ("logger", "callback")


@dataclass(frozen=True)
class Param:
    """One searched config key and its range."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    values: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw this key's value for an Optuna ``trial`` (an enqueued value is used as it is)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.key, list(self.values))

    def probes(self) -> list[Any]:
        """The values checked against the config before the sweep: both ends, or every choice."""
        return list(self.values) if self.type == "choice" else [self.low, self.high]

    def grid(self) -> list[Any]:
        """Every value of this key for ``--sampler grid``."""
        if self.type == "choice":
            return list(self.values)
        if self.step is None and self.type == "float":
            raise ConfigError(
                f"--sampler grid: key {self.key!r} is a continuous float range; give it a step or "
                "use type: choice"
            )
        assert self.low is not None and self.high is not None
        step = self.step or 1
        count = math.floor((self.high - self.low) / step + 1e-9) + 1
        return [
            self.low + i * step if self.type == "int" else round(self.low + i * step, 12)
            for i in range(count)
        ]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "choice":
            out["values"] = list(self.values)
            return out
        out.update(low=self.low, high=self.high)
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def _number(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind == "int" else isinstance(value, (int, float))


def parse_param(key: Any, entry: Any, source: str) -> Param:
    """Read one SPACE.yaml entry; errors name the key and what is wrong with it."""
    where = f"{source}: key {key!r}"
    if not isinstance(key, str) or not key:
        raise ConfigError(
            f"{source}: keys must be config keys such as lr or backbone.drop_path_rate, got {key!r}"
        )
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"{where}: expected a range such as {{type: float, low: 0.001, high: 0.1}} or "
            f"{{type: choice, values: [a, b]}}, got {entry!r}"
        )
    kind = entry.get("type")
    if kind not in _TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(_TYPES)}, got {kind!r}")
    unknown = sorted(set(map(str, entry)) - _FIELDS[kind])
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r} for type {kind}; "
            f"allowed: {', '.join(sorted(_FIELDS[kind]))}"
        )
    if kind == "choice":
        values = entry.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: values must be a non-empty list, got {values!r}")
        for value in values:
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise ConfigError(f"{where}: choice values must be plain scalars, got {value!r}")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: values repeat: {values!r}")
        return Param(key, kind, values=tuple(values))
    low, high, log, step = entry.get("low"), entry.get("high"), entry.get("log", False), entry.get("step")
    for name, value in (("low", low), ("high", high)):
        if not _number(value, kind):
            noun = "an integer" if kind == "int" else "a number"
            raise ConfigError(f"{where}: {name} must be {noun}, got {value!r}")
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got low {low!r}, high {high!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if step is not None and (not _number(step, kind) or step <= 0):
        raise ConfigError(
            f"{where}: step must be a positive {'integer' if kind == 'int' else 'number'}, got {step!r}"
        )
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {low!r}")
    if log and step not in (None, 1):
        raise ConfigError(f"{where}: log: true cannot be combined with a step")
    if kind == "float":
        low, high = float(low), float(high)
        step = float(step) if step is not None else None
    return Param(key, kind, low, high, log, step)


def parse_space(data: Any, source: str) -> list[Param]:
    """All entries of a SPACE.yaml mapping (already loaded), in file order."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(
            f"{source}: expected a mapping of config keys to ranges, e.g. "
            "lr: {type: float, low: 0.0001, high: 0.01, log: true}"
        )
    return [parse_param(key, entry, source) for key, entry in data.items()]


def load_space(path: Any) -> list[Param]:
    """Read SPACE.yaml (a missing or malformed file is a usage error naming it)."""
    from visionkit_core.run.config import load_yaml

    source = f"SPACE.yaml {str(path)!r}"
    try:
        data = load_yaml(path)
    except ConfigError as err:
        raise ConfigError(
            str(err).replace("config file", "space file").replace("--config", "--space")
        ) from None
    return parse_space(data, source)


def _mapping(key: str, value: Any) -> dict[str, Any]:
    """``{key: value}`` as the config mapping ``--set key=value`` makes."""
    path = key.split(".")
    if path[0] == "options":
        path = path[1:]
    head = path[0].replace("-", "_")
    if len(path) == 1:
        return {head: value}
    if head in _NESTED:
        return {"options": {head: {path[1]: {path[2]: value}}}}
    return {"options": {head: {path[1]: value}}}


def apply_params(config: RunConfig, params: Mapping[str, Any], source: str = "sweep") -> RunConfig:
    """``config`` with each searched key set to its value, as ``--set KEY=VALUE`` sets it; validated."""
    for key, value in params.items():
        config = apply_mapping(config, _mapping(key, value), f"{source}: {key}={value!r}")
    validate(config)
    return config


_NUMERIC = {
    "float": ("float",),
    "int": ("int", "float"),
}


def check_keys(space: Sequence[Param], config: RunConfig, source: str) -> None:
    """Each key must be one ``--set`` takes, fit its range's type, and accept the range's ends.

    Option keys (``backbone.*``, ``task.*``...) are checked against the factories later, by
    :func:`component_configs` and the core's ``validate_components``.
    """
    types = {f.name: str(f.type) for f in dataclasses.fields(RunConfig)}
    for param in space:
        where = f"{source}: key {param.key!r}"
        path = param.key.split(".")
        path = path[1:] if path[0] == "options" and len(path) > 1 else path
        head = path[0].replace("-", "_")
        if len(path) == 1 and head in OPTION_SECTIONS:
            raise ConfigError(f"{where}: name an option, e.g. {head}.KEY")
        if len(path) > 1 and head in OPTION_SECTIONS and len(path) != (3 if head in _NESTED else 2):
            form = f"{head}.NAME.OPTION" if head in _NESTED else f"{head}.OPTION"
            raise ConfigError(f"{where}: use {form}")
        if len(path) > 1 and head not in OPTION_SECTIONS:
            raise ConfigError(
                f"{where}: unknown section {head!r}; sections: {', '.join(OPTION_SECTIONS)} "
                "(or a plain key such as lr)"
            )
        if head in _PER_TRIAL:
            raise ConfigError(f"{where}: the sweep sets {head} for every trial ({_PER_TRIAL[head]}); drop it")
        if len(path) == 1 and head in types:
            numeric = _NUMERIC.get(param.type, ())
            if numeric and not any(t in types[head] for t in numeric):
                raise ConfigError(
                    f"{where}: a {param.type} range for {head}, which is {types[head]}; use type: choice"
                )
        for value in param.probes():  # unknown keys and refused values, found as --set finds them
            try:
                apply_params(config, {param.key: value}, source)
            except ConfigError as err:
                raise ConfigError(f"{where}: {_reason(err)}") from None


def _reason(err: ConfigError) -> str:
    """The part of a config error after its source label (``SOURCE: key=value: reason``)."""
    text = str(err)
    return text.split(": ", 2)[-1] if text.count(": ") >= 2 else text


def component_configs(space: Sequence[Param], config: RunConfig, source: str) -> list[tuple[str, RunConfig]]:
    """One config per probe value of every key (for the core's option checks), labelled for errors."""
    out = []
    for param in space:
        for value in param.probes():
            label = f"{source}: key {param.key!r} (value {value!r})"
            try:
                out.append((label, apply_params(config, {param.key: value}, source)))
            except ConfigError as err:
                raise ConfigError(f"{label}: {err}") from None
    return out


def check_point(point: Any, space: Sequence[Param], config: RunConfig, source: str) -> dict[str, Any]:
    """An ``--enqueue`` point: a mapping of space keys to values the config accepts."""
    keys = {p.key for p in space}
    if not isinstance(point, Mapping) or not point:
        raise ConfigError(f"{source}: expected a mapping such as '{{lr: 0.01}}', got {point!r}")
    for key in point:
        if key not in keys:
            raise ConfigError(
                f"{source}: key {key!r} is not in the space; space keys: {', '.join(sorted(keys))}"
            )
    apply_params(config, dict(point), source)
    return dict(point)
