"""Typed engine errors. ``ValueError`` subclasses are the caller's fault (bad input)."""
from __future__ import annotations


class EngineError(Exception):
    """Base class for engine failures."""


class ModelLoadError(EngineError, ValueError):
    """A checkpoint is missing, malformed, or uses something we do not support."""


class UnsupportedModelError(ModelLoadError):
    """The config names an architecture or feature the engine does not implement."""


class OutOfKVBlocksError(EngineError):
    """The block pool cannot hold a sequence even after preempting others (recoverable)."""


class UnknownRequestError(EngineError, KeyError):
    """An operation names a request id the engine does not hold."""
