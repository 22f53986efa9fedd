"""The config schema machinery every package's settings use: typed dataclass fields with checks.

Each package owns its settings as a ``@dataclass(slots=True)`` whose fields carry checks
(``setting(default, ge(1))``); ``validate`` runs them and the field types, raising a
``ConfigError`` that names the dotted path (``pools.prefill.workers: must be >= 1, got 0``).
``build`` reads a nested dict (YAML) into such a dataclass, rejecting unknown keys.
``cluster.config`` composes the packages' settings into the one cluster config.

Why not pydantic: the whole machinery is these ~150 lines, settings stay plain slotted
dataclasses (the house style for messages, picklable into Ray actors as they are), and the
Helm values schema is checked against these fields by a test rather than generated.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

Check = Callable[[Any], "str | None"]   # returns an error message, or None when fine


class ConfigError(ValueError):
    """A config problem; ``path`` is the dotted path of the offending field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message

    def under(self, path: str) -> ConfigError:
        """The same error, its path prefixed with the section it was found in."""
        return ConfigError(join(path, self.path) if self.path else path, self.message)


def setting(default: Any = dataclasses.MISSING, *checks: Check, factory: Any = None) -> Any:
    """A dataclass field with checks that ``validate`` runs."""
    meta = {"checks": checks}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# -- checks ------------------------------------------------------------------------------------
def ge(lo: float) -> Check:
    return lambda v: None if v is None or v >= lo else f"must be >= {lo}, got {v!r}"


def gt(lo: float) -> Check:
    return lambda v: None if v is None or v > lo else f"must be > {lo}, got {v!r}"


def matches(pattern: str, what: str) -> Check:
    """The string matches ``pattern`` entirely (None passes)."""
    return lambda v: None if v is None or re.fullmatch(pattern, v) else f"must be {what}, got {v!r}"


def port(v: Any) -> str | None:
    return None if v is None or 0 <= v <= 65535 else f"must be a port in 0..65535, got {v!r}"


name = matches(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", "a name of letters, digits, '_', '.', '-'")
env_name = matches(r"[A-Za-z_][A-Za-z0-9_]{0,127}", "an environment variable name")
def redis_url(v: Any) -> str | None:
    ok = v is None or re.match(r"(rediss?|unix)://", v)
    return None if ok else f"must start with redis://, rediss:// or unix://, got {v!r}"



byte_size = matches(r"(?i)[1-9][0-9]{0,12}(kb|mb|gb)", "a size like '512mb' or '2gb'")


# -- validation and building -----------------------------------------------------------------
def validate(node: Any, path: str = "") -> None:
    """Check every field of a settings dataclass (recursively): types first, then checks."""
    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):
        value, where = getattr(node, f.name), join(path, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, where)
            continue
        _coerce(hints[f.name], value, where)   # catches wrong types set in code, too
        for check in f.metadata.get("checks", ()):
            problem = check(value)
            if problem:
                raise ConfigError(where, problem)


def build(cls: type, data: Any, path: str = "") -> Any:
    """A ``cls`` from a nested dict; unknown keys and bad values raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(path, f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(join(path, str(key)), f"unknown key; known: {', '.join(names)}")
    kwargs = {k: _coerce(hints[k], v, join(path, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:       # a __post_init__ validation: name the section it is in
        raise exc.under(path) from None


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if value is None:
            raise ConfigError(path, "must not be null")
        return _coerce(inner[0], value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(path, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(path, f"must be a non-empty string, got {value!r}")
        return value
    raise ConfigError(path, f"unsupported field type {tp!r}")  # a schema bug, not user input
