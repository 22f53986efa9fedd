"""The native backend: our key scheme and wire values straight on Redis, no LMCache.

It has no worker-local tier; it exists so the store engine can be swapped without
touching callers or stored data (same keys, same values as the LMCache backend).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from engine.kv_export import KVLayout
from kv_transfer.redis_server import RedisServer
from kv_transfer.store.base import FetchSample, KVStore, StoreClosed, register_store
from kv_transfer.store.config import StoreConfig
from kv_transfer.store.keys import KeyScheme
from kv_transfer.store.remote_tier import RedisChunkTier, TierBackedStore
from kv_transfer.store.values import ValueCodec

logger = logging.getLogger(__name__)


def open_redis(config: StoreConfig) -> tuple[str, RedisServer | None]:
    """The configured Redis URL, or a freshly started private server's (owned by caller)."""
    if config.url is not None:
        return config.url, None
    server = RedisServer(maxmemory=config.private_maxmemory, policy=config.private_policy)
    server.start().supervise()
    return server.url, server


def check_kv(kv: torch.Tensor, layout: KVLayout, num_token_ids: int) -> None:
    """Reject KV that does not match the store's layout or outruns its tokens."""
    want = (layout.num_layers, 2, layout.num_kv_heads, layout.head_dim)
    if not isinstance(kv, torch.Tensor) or kv.dim() != 5 or \
            (kv.shape[0], kv.shape[1], kv.shape[3], kv.shape[4]) != want:
        shape = tuple(kv.shape) if isinstance(kv, torch.Tensor) else type(kv).__name__
        raise ValueError(f"kv {shape} does not match layout [L, 2, n, H, D] = {want}")
    if kv.shape[2] > num_token_ids:
        raise ValueError(f"kv covers {kv.shape[2]} tokens but only {num_token_ids} token ids given")
    if kv.dtype != getattr(torch, layout.dtype):
        raise ValueError(f"kv dtype {kv.dtype} != layout dtype {layout.dtype}")


@register_store("redis")
class RedisStore(TierBackedStore, KVStore):
    """Chunks in Redis under ``KeyScheme`` keys, values in the kv_transfer wire format."""

    def __init__(self, config: StoreConfig, layout: KVLayout) -> None:
        super().__init__(config, layout)
        self.scheme = KeyScheme(layout, config.value_codec, config.chunk_size, config.tenant_sharing,
                                config.key_prefix)
        values = ValueCodec(layout, config.value_codec, entropy=config.entropy)
        self.url, self._server = open_redis(config)
        self.tier = RedisChunkTier(self.url, values, config.chunk_size, config.op_timeout_s)
        if config.url is not None:
            self.tier.check_eviction_policy()
        self._closed = False

    def _live(self) -> None:
        if self._closed:
            raise StoreClosed("store is closed")

    def lookup(self, token_ids: Sequence[int], salt: bytes | str | None = None) -> int:
        self._live()
        return self.tier.count_prefix(self.scheme.chunk_keys(token_ids, salt)) * self.scheme.chunk_size

    def get(self, token_ids: Sequence[int], num_tokens: int,
            salt: bytes | str | None = None) -> torch.Tensor | None:
        self._live()
        n = self.scheme.full_chunk_tokens(min(num_tokens, len(token_ids)))
        chunks = self.tier.fetch(self.scheme.chunk_keys(list(token_ids)[:n], salt))
        return torch.cat(chunks, dim=2) if chunks else None

    def put(self, token_ids: Sequence[int], kv: torch.Tensor,
            salt: bytes | str | None = None) -> None:
        self._live()
        check_kv(kv, self.layout, len(token_ids))
        n = self.scheme.full_chunk_tokens(kv.shape[2])
        keys = self.scheme.chunk_keys(list(token_ids)[:n], salt)
        c = self.scheme.chunk_size
        self.tier.store(keys, [kv[:, :, i * c:(i + 1) * c] for i in range(len(keys))])

    def measure_fetch(self, tier: str, num_chunks: int) -> FetchSample | None:
        return self.tier.measure_fetch(num_chunks) if tier == "remote" else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.tier.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
