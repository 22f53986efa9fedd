"""Fixtures of the global KV store tests: real Redis, real LMCache, real engine."""
from __future__ import annotations

import pytest
import redis

from engine.kv_export import KVLayout
from kv_transfer.store import create_store
from store_helpers import LAYOUT, store_config


@pytest.fixture
def make_store(redis_url):
    """Factory of stores on the session Redis (emptied per test); all closed afterwards."""
    stores = []

    def make(backend: str = "lmcache", layout: KVLayout = LAYOUT, **overrides):
        overrides.setdefault("url", redis_url)
        store = create_store(store_config(backend=backend, **overrides), layout)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stories_llm():
    """stories260K with the engine's own prefix cache off, so every hit is the store's."""
    from engine import LLM
    return LLM(model="stories260K", enable_prefix_caching=False, seed=0, max_num_seqs=4)
