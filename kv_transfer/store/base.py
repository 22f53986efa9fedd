"""The store interface: what the prefix cache needs from a global KV store.

Implementations register by name (``@register_store("lmcache")``) and are built with
``create_store(config, layout)``. All of them use ``KeyScheme`` keys and the kv_transfer
wire format for values, so one can replace another over the same Redis data.
"""
from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from engine.kv_export import KVLayout
from kv_transfer.store.config import StoreConfig


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The remote tier failed or was too slow; recoverable: recompute and retry later."""


class StoreClosed(StoreError):
    """The store was used after ``close()``; fatal for that store object."""


@dataclass(slots=True, frozen=True)
class TierHits:
    """A prefix hit split by tier: ``local`` tokens first, then ``remote`` tokens."""
    local: int
    remote: int

    @property
    def total(self) -> int:
        return self.local + self.remote


@dataclass(slots=True, frozen=True)
class FetchSample:
    """One timed fetch: ``raw_bytes`` of KV delivered in ``seconds``."""
    raw_bytes: int
    seconds: float


class KVStore(abc.ABC):
    """A content-addressed store of KV chunks, keyed by token prefix and tenant salt.

    KV tensors are ``[num_layers, 2, num_tokens, num_kv_heads, head_dim]``. Only full
    chunks are stored and found. Remote failures raise ``StoreUnavailable``; an entry that
    fails to decode or verify is deleted, counted, and treated as a miss.
    """

    def __init__(self, config: StoreConfig, layout: KVLayout) -> None:
        self.config = config
        self.layout = layout

    @abc.abstractmethod
    def lookup(self, token_ids: Sequence[int], salt: bytes | str | None = None) -> int:
        """Length in tokens of the longest stored prefix (a multiple of the chunk size)."""

    def lookup_tiers(self, token_ids: Sequence[int], salt: bytes | str | None = None) -> TierHits:
        """The stored prefix split by tier; a store without a local tier is all remote."""
        return TierHits(local=0, remote=self.lookup(token_ids, salt))

    @abc.abstractmethod
    def get(self, token_ids: Sequence[int], num_tokens: int,
            salt: bytes | str | None = None) -> torch.Tensor | None:
        """KV of the first ``num_tokens`` tokens (whole chunks), or of a shorter prefix if
        part of it is gone or corrupt; ``None`` when not even the first chunk is usable."""

    @abc.abstractmethod
    def put(self, token_ids: Sequence[int], kv: torch.Tensor,
            salt: bytes | str | None = None) -> None:
        """Store the full chunks of ``kv`` (which covers ``token_ids[:kv.shape[2]]``)."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """True if the remote tier answers now (the breaker's reconnect probe)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every thread, connection and owned process; idempotent."""

    def set_remote_enabled(self, enabled: bool) -> bool:
        """Switch the remote tier off (breaker open) or back on. Returns True if the store
        keeps serving a local tier meanwhile, False if it is useless without its remote."""
        return False

    def measure_fetch(self, tier: str, num_chunks: int) -> "FetchSample | None":
        """Time fetching ``num_chunks`` synthetic chunks from ``tier`` ("local" or
        "remote"), decode included; ``None`` if the store has no such tier."""
        return None

    def dropped_remote_puts(self) -> int:
        """Chunk writes to the remote tier dropped because its write queue was full."""
        return 0

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until the store's own asynchronous writes are done; False on timeout."""
        return True

    def corrupt_entries(self) -> int:
        """Entries found corrupt (and deleted) so far."""
        return 0

    def remote_errors(self) -> int:
        """Remote-tier failures seen so far, including asynchronous ones."""
        return 0

    def write_errors(self) -> int:
        """The part of ``remote_errors`` met while writing (possibly in the background)."""
        return 0

    def clear_local(self) -> None:
        """Drop the worker-local tier (if any); the remote tier keeps its entries."""

    def __enter__(self) -> "KVStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_REGISTRY: dict[str, Callable[[StoreConfig, KVLayout], KVStore]] = {}


def register_store(name: str) -> Callable[[type[KVStore]], type[KVStore]]:
    """Class decorator: make a ``KVStore`` implementation constructible by name."""
    def wrap(cls: type[KVStore]) -> type[KVStore]:
        if name in _REGISTRY:
            raise ValueError(f"store backend {name!r} is already registered")
        _REGISTRY[name] = cls
        return cls
    return wrap


def available_stores() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_store(config: StoreConfig, layout: KVLayout) -> KVStore:
    """Build the store named by ``config.backend``."""
    _load_builtin(config.backend)
    if config.backend not in _REGISTRY:
        raise ValueError(f"unknown store backend {config.backend!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[config.backend](config, layout)


_BUILTIN = {"redis": "kv_transfer.store.redis_store", "lmcache": "kv_transfer.store.lmcache_store"}


def _load_builtin(name: str | None = None) -> None:
    # Imported lazily: the lmcache backend costs seconds to import and sets process state.
    for backend, module in _BUILTIN.items():
        if backend not in _REGISTRY and name in (None, backend):
            importlib.import_module(module)
