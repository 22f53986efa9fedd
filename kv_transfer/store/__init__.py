"""The global KV store for prefix reuse: LMCache over Redis behind a thin interface.

``PrefixCacheClient`` is what a prefill worker uses (plan / fetch / write_back);
``KVStore`` is the pluggable store ("lmcache": LMCache engine with a DRAM tier and a
Redis tier; "redis": the same keys and values on Redis directly). See docs/store.md.
Importing this package does not import LMCache; building an "lmcache" store does.
"""
from kv_transfer.store.base import (
    FetchSample, KVStore, StoreClosed, StoreError, StoreUnavailable, TierHits,
    available_stores, create_store, register_store,
)
from kv_transfer.store.client import PrefixCacheClient
from kv_transfer.store.config import StoreConfig
from kv_transfer.store.keys import KeyScheme
from kv_transfer.store.stats import FetchPlan, StoreStats

__all__ = [
    "FetchPlan", "FetchSample", "KVStore", "KeyScheme", "PrefixCacheClient", "StoreClosed",
    "StoreConfig", "StoreError", "StoreStats", "StoreUnavailable", "TierHits",
    "available_stores", "create_store", "register_store",
]
