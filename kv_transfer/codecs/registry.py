"""The codec registry by name: torch-free, so the router lists and checks codec names.

Built-in codecs are named here with the module that registers them and load on first use;
a plug-in registers its class with ``register_codec`` (a class decorator) when imported.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kv_transfer.errors import UnknownCodecError

if TYPE_CHECKING:
    from kv_transfer.codecs.base import KVCodec

_BUILT_IN = {"raw": "raw", "int8": "int8", "kivi4": "kivi", "kivi2": "kivi",
             "ecq": "ecq", "ecq-hq": "ecq", "ecq-lo": "ecq"}
_PRESETS: dict[str, tuple[type[KVCodec], dict[str, Any]]] = {}


def register_codec(cls: type[KVCodec], name: str | None = None, **preset: Any) -> type[KVCodec]:
    """Register ``cls`` under ``name`` (default ``cls.name``), optionally with preset parameters
    (e.g. ``kivi2`` is the KIVI codec with ``bits=2``). Usable as a class decorator."""
    key = name or cls.name
    if not key or not key.isascii() or len(key) > 64:
        raise ValueError(f"codec names are 1-64 ASCII characters, got {key!r}")
    if key in _PRESETS and _PRESETS[key][0] is not cls:
        raise ValueError(f"codec name {key!r} is already registered by {_PRESETS[key][0].__name__}")
    _PRESETS[key] = (cls, dict(preset))
    return cls


def _entry(name: str) -> tuple[type[KVCodec], dict[str, Any]]:
    if name not in _PRESETS and isinstance(name, str) and name in _BUILT_IN:
        importlib.import_module(f"kv_transfer.codecs.{_BUILT_IN[name]}")
    try:
        return _PRESETS[name]
    except (KeyError, TypeError):
        raise UnknownCodecError(f"unknown KV codec {name!r}; available: {available_codecs()}") from None


def get_codec(name: str, **params: Any) -> KVCodec:
    """A codec instance by registered name; explicit ``params`` override the preset's."""
    cls, preset = _entry(name)
    try:
        return cls(**{**preset, **params})
    except TypeError as exc:     # an unknown keyword: report it as the ValueError it is
        raise ValueError(f"bad parameters for codec {name!r}: {exc}") from None


def available_codecs() -> list[str]:
    """Names accepted by ``get_codec``, sorted (without importing a codec)."""
    return sorted(set(_BUILT_IN) | set(_PRESETS))


def is_lossless(name: str) -> bool:
    """Whether the codec registered under ``name`` reproduces its input bit for bit."""
    return _entry(name)[0].lossless
