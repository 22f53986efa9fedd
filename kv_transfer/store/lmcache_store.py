"""The default backend: LMCache as the store engine, worker DRAM local, Redis remote.

LMCache (pinned 0.5.6) runs its storage manager: an LRU DRAM tier in this process and a
remote tier that is our ``TandemRedisConnector`` (wire-format values). Keys come from our
``TandemTokenDatabase``; KV moves through our ``TandemKVConnector``. The engine is built
directly rather than through ``LMCacheEngineBuilder``, whose ``destroy()`` is where the
upstream redis connector hangs; ``close()`` here never waits on Redis.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence

from kv_transfer.store.lmcache_env import (
    engine_closed, engine_opened, import_lmcache, preserved_process_state,
)

import_lmcache()

import torch  # noqa: E402

from lmcache.v1.cache_engine import LMCacheEngine  # noqa: E402
from lmcache.v1.config import LMCacheEngineConfig  # noqa: E402
from lmcache.v1.metadata import LMCacheMetadata  # noqa: E402

from engine.kv_export import KVLayout  # noqa: E402
from kv_transfer.store.base import (  # noqa: E402
    FetchSample, KVStore, StoreClosed, StoreUnavailable, TierHits, register_store,
)
from kv_transfer.store.config import StoreConfig  # noqa: E402
from kv_transfer.store.keys import KeyScheme, tenant_bytes  # noqa: E402
from kv_transfer.store.lmcache_keys import SALT_CONFIG, TandemTokenDatabase  # noqa: E402
from kv_transfer.store.lmcache_kv_connector import TandemKVConnector  # noqa: E402
from kv_transfer.store.lmcache_remote import (  # noqa: E402
    PLUGIN_NAME, RemoteContext, plugin_extra_config, register_context, unregister_context,
)
from kv_transfer.store.redis_store import check_kv, open_redis  # noqa: E402
from kv_transfer.store.remote_tier import RedisChunkTier, TierBackedStore  # noqa: E402
from kv_transfer.store.values import ValueCodec  # noqa: E402

logger = logging.getLogger(__name__)

LOCAL = "LocalCPUBackend"
REMOTE = f"RemoteBackend-{PLUGIN_NAME}"
_MIN_BUFFER_CHUNKS = 8  # LMCache stages remote reads in DRAM even with no DRAM tier


@register_store("lmcache")
class LMCacheStore(TierBackedStore, KVStore):
    """``KVStore`` on an LMCache engine with a DRAM tier and a Redis tier."""

    def __init__(self, config: StoreConfig, layout: KVLayout) -> None:
        super().__init__(config, layout)
        self.scheme = KeyScheme(layout, config.value_codec, config.chunk_size, config.tenant_sharing,
                                config.key_prefix)
        self.dtype = getattr(torch, layout.dtype)
        values = ValueCodec(layout, config.value_codec, entropy=config.entropy)
        self.url, self._server = open_redis(config)
        self.tier = RedisChunkTier(self.url, values, config.chunk_size, config.op_timeout_s)
        if config.url is not None:
            self.tier.check_eviction_policy()
        self.store_id = f"tandem-store-{uuid.uuid4().hex[:8]}"
        self._ctx = RemoteContext(self.tier, max_pending_put_bytes=config.writeback_max_bytes)
        register_context(self.store_id, self._ctx)
        self._lock = threading.RLock()
        self._closed = False
        try:
            self.engine = self._build_engine()
        except BaseException:
            self._release()
            raise
        engine_opened()

    def _build_engine(self) -> LMCacheEngine:
        cfg, lay = self.config, self.layout
        chunk_bytes = (lay.num_layers * 2 * cfg.chunk_size * lay.num_kv_heads * lay.head_dim
                       * self.dtype.itemsize)
        dram = max(cfg.local_cpu_bytes, _MIN_BUFFER_CHUNKS * chunk_bytes)
        lm_config = LMCacheEngineConfig.from_defaults(
            chunk_size=cfg.chunk_size, local_cpu=True, max_local_cpu_size=dram / 2**30,
            remote_serde="naive", save_unfull_chunk=False,
            remote_storage_plugins=[PLUGIN_NAME], extra_config=plugin_extra_config(self.store_id),
            blocking_timeout_secs=max(10, math.ceil(10 * cfg.op_timeout_s)),  # backstop only
            lmcache_instance_id=self.store_id, enable_controller=False)
        metadata = LMCacheMetadata(
            model_name=self.scheme.prefix, world_size=1, local_world_size=1, worker_id=0,
            local_worker_id=0, kv_dtype=self.dtype,
            kv_shape=(lay.num_layers, 2, cfg.chunk_size, lay.num_kv_heads, lay.head_dim),
            chunk_size=cfg.chunk_size)
        with preserved_process_state():
            engine = LMCacheEngine(lm_config, metadata, TandemTokenDatabase(self.scheme, self.dtype),
                                   TandemKVConnector(lay.num_layers, lay.num_kv_heads, lay.head_dim),
                                   broadcast_fn=lambda *a: None, broadcast_object_fn=lambda *a: None)
            engine.post_init()
        if cfg.local_cpu_bytes == 0:
            engine.set_hot_cache(False)  # DRAM only stages remote reads
        backends = list(engine.storage_manager.storage_backends)
        if REMOTE not in backends:
            engine.close()
            raise RuntimeError(f"LMCache did not load the Tandem Redis connector: {backends}")
        logger.info("LMCache store %s: DRAM %.0f MiB, Redis %s, codec %s, chunk %d",
                    self.store_id, dram / 2**20, self.url, cfg.value_codec, cfg.chunk_size)
        return engine

    # -- KVStore -------------------------------------------------------------------
    def _read_errors(self) -> int:
        snap = self.tier.snapshot()
        return snap.errors - snap.write_errors

    def _call(self, op, *args, **kwargs):
        """Run an engine call; a Redis read failing under it (LMCache swallows those)
        surfaces as ``StoreUnavailable``. Background write-backs failing meanwhile are
        counted, not blamed on this call."""
        with self._lock:
            if self._closed:
                raise StoreClosed("store is closed")
            errors = self._read_errors()
            result = op(*args, **kwargs)
            if self._read_errors() != errors:
                raise StoreUnavailable("redis failed during the operation")
            return result

    def lookup(self, token_ids: Sequence[int], salt: bytes | str | None = None) -> int:
        return self.lookup_tiers(token_ids, salt).total

    def lookup_tiers(self, token_ids: Sequence[int], salt: bytes | str | None = None) -> TierHits:
        configs = {SALT_CONFIG: tenant_bytes(salt)}
        manager = self.engine.storage_manager

        def both_tiers() -> tuple[int, int]:
            # One hashing pass; DRAM first, then Redis for the chunks right after it
            # (what LMCache's own lookup does, split by tier for the cost model).
            keys = [key for _, _, key in self.engine.token_database.process_tokens(
                list(token_ids), request_configs=configs)]
            local, _ = manager.batched_contains(keys, [LOCAL])
            remote = manager.batched_contains(keys[local:], [REMOTE])[0] if local < len(keys) else 0
            return local, remote

        local, remote = self._call(both_tiers)
        return TierHits(local=local * self.scheme.chunk_size, remote=remote * self.scheme.chunk_size)

    def get(self, token_ids: Sequence[int], num_tokens: int,
            salt: bytes | str | None = None) -> torch.Tensor | None:
        n = self.scheme.full_chunk_tokens(min(num_tokens, len(token_ids)))
        if n == 0:
            return None
        lay = self.layout
        kv_out = torch.empty(lay.num_layers, 2, n, lay.num_kv_heads, lay.head_dim, dtype=self.dtype)
        mask = self._call(self.engine.retrieve, list(token_ids)[:n], kv_out=kv_out,
                          request_configs={SALT_CONFIG: tenant_bytes(salt)})
        got = int(mask.sum().item())
        if got == 0:
            return None
        return kv_out if got == n else kv_out[:, :, :got].clone()

    def put(self, token_ids: Sequence[int], kv: torch.Tensor,
            salt: bytes | str | None = None) -> None:
        check_kv(kv, self.layout, len(token_ids))
        n = self.scheme.full_chunk_tokens(kv.shape[2])
        if n == 0:
            return
        tokens = list(token_ids)[:n]
        # Chunks Redis already holds are not copied or sent again (shared prefixes).
        keys = self.scheme.chunk_keys(tokens, salt)
        with self._lock:
            remote_on = not self.engine.storage_manager.is_backend_bypassed(REMOTE)
        have, failure = 0, None
        try:
            if remote_on:
                have = self.tier.count_prefix(keys) * self.scheme.chunk_size
        except StoreUnavailable as exc:
            failure = exc  # the DRAM tier still takes the chunks; then the caller hears
        if have < n:
            mask = torch.zeros(n, dtype=torch.bool)
            mask[have:] = True
            self._call(self.engine.store, tokens, mask=mask, kv=kv,
                       request_configs={SALT_CONFIG: tenant_bytes(salt)})
        if failure is not None:
            raise failure

    def set_remote_enabled(self, enabled: bool) -> bool:
        with self._lock:
            if not self._closed:
                self.engine.storage_manager.set_backend_bypass(REMOTE, not enabled)
        return True  # the DRAM tier keeps serving while Redis is bypassed

    def measure_fetch(self, tier: str, num_chunks: int) -> FetchSample | None:
        if tier == "remote":
            return self.tier.measure_fetch(num_chunks)
        if tier != "local" or self.config.local_cpu_bytes == 0:
            return None
        return self._measure_local(max(1, num_chunks))

    def _measure_local(self, num_chunks: int) -> FetchSample | None:
        """A real DRAM-tier retrieve of throw-away chunks, Redis bypassed meanwhile."""
        lay, n = self.layout, num_chunks * self.scheme.chunk_size
        tokens = torch.randint(0, 1 << 30, (n,)).tolist()
        configs = {SALT_CONFIG: b"tandem-probe-" + uuid.uuid4().bytes}
        kv = torch.randn(lay.num_layers, 2, n, lay.num_kv_heads, lay.head_dim).to(self.dtype)
        manager = self.engine.storage_manager
        with self._lock:
            if self._closed:
                raise StoreClosed("store is closed")
            was_bypassed = manager.is_backend_bypassed(REMOTE)
            manager.set_backend_bypass(REMOTE, True)
            try:
                self.engine.store(tokens, kv=kv, request_configs=configs)
                started = time.perf_counter()
                mask = self.engine.retrieve(tokens, kv_out=torch.empty_like(kv),
                                            request_configs=configs)
                elapsed = time.perf_counter() - started
                for _, _, key in self.engine.token_database.process_tokens(
                        tokens, request_configs=configs):
                    manager.remove(key, [LOCAL])
            finally:
                manager.set_backend_bypass(REMOTE, was_bypassed)
        got = int(mask.sum().item())
        if got == 0:
            return None  # DRAM tier too small to hold the probe
        return FetchSample(kv[:, :, :got].numel() * kv.element_size(), elapsed)

    def flush(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        if not self._started_queued_puts(timeout_s):
            return False
        while time.monotonic() < deadline:
            if not any(c.pending_put_bytes for c in self._ctx.connectors):
                return True
            time.sleep(0.005)
        return False

    def _started_queued_puts(self, timeout_s: float) -> bool:
        """Wait until every remote put LMCache has scheduled so far has started (it then
        shows in the connector's pending bytes): its loop runs callbacks in order."""
        async def barrier() -> None:
            await asyncio.sleep(0)
        loop = self.engine.storage_manager.loop
        if not loop.is_running():
            return True
        try:
            asyncio.run_coroutine_threadsafe(barrier(), loop).result(timeout_s)
            return True
        except (concurrent.futures.TimeoutError, RuntimeError):
            return False

    def dropped_remote_puts(self) -> int:
        return self._ctx.dropped_puts

    def clear_local(self) -> None:
        with self._lock:
            if not self._closed:
                self.engine.storage_manager.clear(locations=[LOCAL])

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # No new remote work; the in-flight I/O finishes (each call bounded by the op
            # timeout) before LMCache frees the DRAM its memory objects live in.
            self.engine.storage_manager.set_backend_bypass(REMOTE, True)
        self._started_queued_puts(self.config.op_timeout_s)
        for connector in self._ctx.connectors:
            connector.join()
        try:
            self.engine.close()  # our connector's close never blocks; no Builder.destroy()
        finally:
            engine_closed()
            self._release()

    def _release(self) -> None:
        for connector in self._ctx.connectors:
            connector.join()
        unregister_context(self.store_id)
        self.tier.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
