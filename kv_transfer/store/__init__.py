"""The global KV store for prefix reuse: LMCache over Redis behind a thin interface.

``PrefixCacheClient`` is what a prefill worker uses (plan / fetch / write_back);
``KVStore`` is the pluggable store ("lmcache": LMCache engine with a DRAM tier and a
Redis tier; "redis": the same keys and values on Redis directly). See docs/store.md.
The names load on first use: ``kv_transfer.store.config`` is torch-free, and building an
"lmcache" store is what imports LMCache.
"""
from tandem_common.lazy import lazy_exports

_EXPORTS = {name: "kv_transfer.store.base" for name in (
    "FetchSample", "KVStore", "StoreClosed", "StoreError", "StoreUnavailable", "TierHits",
    "available_stores", "create_store", "register_store")} | {
    "PrefixCacheClient": "kv_transfer.store.client", "StoreConfig": "kv_transfer.store.config",
    "KeyScheme": "kv_transfer.store.keys", "FetchPlan": "kv_transfer.store.stats",
    "StoreStats": "kv_transfer.store.stats"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
