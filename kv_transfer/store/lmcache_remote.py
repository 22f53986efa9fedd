"""LMCache remote connector that keeps Redis values in our wire format.

LMCache's own redis connector stores raw memory-object bytes plus a metadata key and its
``close()`` blocks forever inside its event loop (upstream #4489). This one is loaded as
a remote storage plugin; it delegates to ``RedisChunkTier`` (codec, checksum, corrupt
entry deletion, counters) and runs Redis calls on two private threads, one for reads and
one for writes, so a write-back never queues in front of a fetch. ``close()`` returns at
once. Write-backs beyond ``max_pending_put_bytes`` are dropped, never queued.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kv_transfer.store.lmcache_env import force_telemetry_off

force_telemetry_off()

import torch  # noqa: E402

from lmcache.utils import CacheEngineKey  # noqa: E402
from lmcache.v1.memory_management import MemoryObj  # noqa: E402
from lmcache.v1.storage_backend.connector.base_connector import RemoteConnector  # noqa: E402

from kv_transfer.store.base import StoreUnavailable  # noqa: E402
from kv_transfer.store.remote_tier import RedisChunkTier  # noqa: E402

logger = logging.getLogger(__name__)

STORE_ID_CONFIG = "tandem.store_id"
PLUGIN_NAME = "tandem"


@dataclass(slots=True)
class RemoteContext:
    """What our connector needs and LMCache cannot pass it: found by store id."""
    tier: RedisChunkTier
    max_pending_put_bytes: int
    dropped_puts: int = 0
    connectors: list["TandemRedisConnector"] = field(default_factory=list)


_CONTEXTS: dict[str, RemoteContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def register_context(store_id: str, ctx: RemoteContext) -> None:
    with _CONTEXTS_LOCK:
        _CONTEXTS[store_id] = ctx


def unregister_context(store_id: str) -> None:
    with _CONTEXTS_LOCK:
        _CONTEXTS.pop(store_id, None)


def plugin_extra_config(store_id: str) -> dict:
    """LMCache ``extra_config`` entries that load this connector for one store."""
    return {f"remote_storage_plugin.{PLUGIN_NAME}.module_path": __name__,
            f"remote_storage_plugin.{PLUGIN_NAME}.class_name": "TandemRedisConnector",
            STORE_ID_CONFIG: store_id}


class TandemRedisConnector(RemoteConnector):
    """LMCache ``RemoteConnector`` over ``RedisChunkTier``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, local_cpu_backend, config) -> None:
        super().__init__(config, local_cpu_backend.metadata)
        store_id = (config.extra_config or {}).get(STORE_ID_CONFIG)
        with _CONTEXTS_LOCK:
            if store_id not in _CONTEXTS:
                raise ValueError(f"no Tandem store context registered for {store_id!r}")
            self.ctx = _CONTEXTS[store_id]
        self.tier = self.ctx.tier
        self.loop = loop
        self.local_cpu_backend = local_cpu_backend
        meta = local_cpu_backend.metadata
        self.num_layers, _, self.chunk_size, self.num_heads, self.head_dim = meta.kv_shape
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="tandem-store-read")
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="tandem-store-write")
        self._pending_put_bytes = 0
        self._pending_lock = threading.Lock()
        self.ctx.connectors.append(self)

    # -- lookups -------------------------------------------------------------------
    def exists_sync(self, key: CacheEngineKey) -> bool:
        return self.tier.count_prefix([key.to_string()]) == 1

    async def exists(self, key: CacheEngineKey) -> bool:
        return await self.loop.run_in_executor(self._reads, self.exists_sync, key)

    def support_batched_contains(self) -> bool:
        return True

    def batched_contains(self, keys: list[CacheEngineKey]) -> int:
        return self.tier.count_prefix([k.to_string() for k in keys])

    # -- reads ---------------------------------------------------------------------
    def support_batched_get(self) -> bool:
        return True

    async def get(self, key: CacheEngineKey) -> MemoryObj | None:
        return (await self.batched_get([key]))[0]

    async def batched_get(self, keys: list[CacheEngineKey]) -> list[MemoryObj | None]:
        return await self.loop.run_in_executor(self._reads, self._fetch_objs, keys)

    def _fetch_objs(self, keys: list[CacheEngineKey]) -> list[MemoryObj | None]:
        chunks = self.tier.fetch([k.to_string() for k in keys])
        out: list[MemoryObj | None] = [None] * len(keys)
        for i, chunk in enumerate(chunks):
            obj = self.local_cpu_backend.allocate(self.meta_shapes, self.meta_dtypes,
                                                  self.meta_fmt, busy_loop=False)
            if obj is None:  # DRAM tier full of pinned chunks: a shorter hit, not a wait
                logger.warning("local tier full; fetched %d of %d chunks", i, len(keys))
                break
            self._obj_view(obj).copy_(chunk)
            out[i] = obj
        return out

    def _obj_view(self, obj: MemoryObj) -> torch.Tensor:
        # [2, L, n, H*D] memory object as the engine's [L, 2, n, H, D].
        return obj.tensor.view(2, self.num_layers, self.chunk_size, self.num_heads,
                               self.head_dim).transpose(0, 1)

    # -- writes --------------------------------------------------------------------
    def support_batched_put(self) -> bool:
        return True

    async def put(self, key: CacheEngineKey, memory_obj: MemoryObj) -> None:
        await self.batched_put([key], [memory_obj])

    async def batched_put(self, keys: list[CacheEngineKey], memory_objs: list[MemoryObj]) -> None:
        size = sum(obj.get_size() for obj in memory_objs)
        with self._pending_lock:
            if self._pending_put_bytes + size > self.ctx.max_pending_put_bytes:
                self.ctx.dropped_puts += len(keys)
                logger.warning("remote write-back queue full: dropped %d chunks", len(keys))
                return
            self._pending_put_bytes += size
        try:
            # LMCache drops its reference when this returns: the copy must be done by then.
            await self.loop.run_in_executor(self._writes, self._store_objs, keys, memory_objs)
        finally:
            with self._pending_lock:
                self._pending_put_bytes -= size

    def _store_objs(self, keys: list[CacheEngineKey], memory_objs: list[MemoryObj]) -> None:
        try:
            self.tier.store([k.to_string() for k in keys],
                            [self._obj_view(obj) for obj in memory_objs])
        except StoreUnavailable:
            pass  # counted by the tier; the breaker reads the counter

    @property
    def pending_put_bytes(self) -> int:
        with self._pending_lock:
            return self._pending_put_bytes

    # -- lifecycle -----------------------------------------------------------------
    def support_ping(self) -> bool:
        return True

    async def ping(self) -> int:
        ok = await self.loop.run_in_executor(self._reads, self.tier.ping)
        return 0 if ok else 1

    async def list(self) -> list[str]:
        return []

    async def close(self) -> None:
        # Never wait here: LMCache calls this on its own event loop thread.
        self._reads.shutdown(wait=False, cancel_futures=True)
        self._writes.shutdown(wait=False, cancel_futures=True)

    def join(self) -> None:
        """Wait for the I/O threads to finish (each call is bounded by the op timeout)."""
        self._reads.shutdown(wait=True, cancel_futures=True)
        self._writes.shutdown(wait=True, cancel_futures=True)
