"""The backend interface behind the router: what the Ray pools and the local engine implement.

The router validates a request, then iterates ``backend.generate(request)``. A backend
streams ``TokenDelta`` events as tokens appear (the first one as soon as prefill has it)
and ends with exactly one ``Finished``. It reports failures by raising ``router.errors``
types (``NoHealthyWorker``, ``WorkerFailed``, ``Overloaded``, ...).

Cancellation: when the client goes away or the deadline passes, the router closes the
async generator (``aclose()``, or a ``CancelledError`` raised at its current ``await``).
A backend must release the request's resources (abort it on its worker, free KV blocks)
in the generator's ``finally`` block.
"""
from __future__ import annotations

import abc
import importlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from router.messages import ClusterInfo, GenerateEvent, GenerateRequest, ModelInfo


class Tokenizer(Protocol):
    """The part of a tokenizer the router needs; it must run locally (no worker call)."""

    def encode(self, text: str, add_bos: bool = True) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


class Backend(abc.ABC):
    """Serves validated requests. All methods run on the router's event loop."""

    @property
    @abc.abstractmethod
    def tokenizer(self) -> Tokenizer:
        """A local tokenizer for text prompts (the router holds no model weights)."""

    async def start(self) -> None:
        """Acquire workers/threads; called once before the server accepts requests."""

    async def close(self) -> None:
        """Release everything; requests still running end with NoHealthyWorker."""

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        """Stream TokenDelta events, then one Finished (an async generator)."""

    @abc.abstractmethod
    async def model_info(self) -> ModelInfo:
        """The served model's shape, limits and codecs."""

    @abc.abstractmethod
    async def cluster_info(self) -> ClusterInfo:
        """Pools, workers, health and load."""

    @abc.abstractmethod
    async def health(self) -> bool:
        """True when a request sent now can be served."""


_REGISTRY: dict[str, Callable[..., Backend]] = {}
# Built-in backends register on import; importing lazily keeps torch out of the router
# process unless the local engine is asked for.
_BUILTIN_MODULES = {"local": "router.backends.local"}


def register_backend(name: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    """Class decorator: make a backend constructible by name (``create_backend``)."""
    def wrap(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        if name in _REGISTRY:
            raise ValueError(f"backend {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory
    return wrap


def create_backend(name: str, **kwargs) -> Backend:
    """Construct a registered backend; ValueError names the known ones."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def backend_names() -> list[str]:
    """Names ``create_backend`` accepts."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))
