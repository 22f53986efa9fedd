"""The KVStore contract, proved on both backends over a real Redis."""
from __future__ import annotations

import pickle

import pytest
import torch

from engine.kv_export import KVLayout
from kv_transfer.store import StoreClosed, available_stores
from kv_transfer.store.keys import KeyScheme
from store_helpers import CHUNK, LAYOUT, synthetic_kv

BACKENDS = ["lmcache", "redis"]
TOKENS = list(range(1000, 1000 + 5 * CHUNK + 7))      # 5 full chunks and a partial one


def from_redis(store):
    """Make the next get read Redis, not the worker's DRAM tier."""
    store.clear_local()
    return store


def test_both_backends_are_registered():
    assert set(BACKENDS) <= set(available_stores())


@pytest.mark.parametrize("backend", BACKENDS)
def test_put_then_get_is_bit_exact_for_full_chunks_only(make_store, backend):
    store = make_store(backend)
    kv = synthetic_kv(len(TOKENS))
    assert store.lookup(TOKENS, "t") == 0 and store.get(TOKENS, len(TOKENS), "t") is None
    store.put(TOKENS, kv, "t")
    store.flush()
    assert store.lookup(TOKENS, "t") == 5 * CHUNK
    got = from_redis(store).get(TOKENS, len(TOKENS), "t")
    assert got.shape[2] == 5 * CHUNK and torch.equal(got, kv[:, :, :5 * CHUNK])
    part = store.get(TOKENS, 2 * CHUNK + 3, "t")
    assert torch.equal(part, kv[:, :, :2 * CHUNK])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_in_one_backend_is_read_by_the_other(make_store, backend):
    writer = make_store(backend)
    reader = make_store("redis" if backend == "lmcache" else "lmcache")
    kv = synthetic_kv(len(TOKENS), seed=3)
    writer.put(TOKENS, kv, "t")
    writer.flush()
    assert torch.equal(reader.get(TOKENS, len(TOKENS), "t"), kv[:, :, :5 * CHUNK])


@pytest.mark.parametrize("backend", BACKENDS)
def test_tenant_salts_isolate_unless_shared(make_store, backend):
    store = make_store(backend)
    store.put(TOKENS, synthetic_kv(len(TOKENS)), "alice")
    store.flush()
    assert store.lookup(TOKENS, "alice") == 5 * CHUNK
    assert store.lookup(TOKENS, "bob") == 0 and store.lookup(TOKENS, None) == 0
    assert from_redis(store).get(TOKENS, len(TOKENS), "bob") is None
    shared = make_store(backend, tenant_sharing=True)
    shared.put(TOKENS, synthetic_kv(len(TOKENS)), "alice")
    shared.flush()
    assert shared.lookup(TOKENS, "bob") == 5 * CHUNK


@pytest.mark.parametrize("backend", BACKENDS)
def test_another_model_never_hits(make_store, backend):
    make_store(backend).put(TOKENS, synthetic_kv(len(TOKENS)), "t")
    other_layout = KVLayout(LAYOUT.num_layers, LAYOUT.num_kv_heads, LAYOUT.head_dim,
                            LAYOUT.dtype, "another-model-fingerprint")
    other = make_store(backend, layout=other_layout)
    assert other.lookup(TOKENS, "t") == 0 and other.get(TOKENS, len(TOKENS), "t") is None


def _flip(client, key):
    value = bytearray(client.get(key))
    value[len(value) // 2] ^= 0x01
    client.set(key, bytes(value))


def _truncate(client, key):
    client.set(key, client.get(key)[:-9])


def _pickle(client, key):
    client.set(key, pickle.dumps(synthetic_kv(CHUNK)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("damage", [_flip, _truncate, _pickle], ids=["flip", "truncate", "pickle"])
def test_a_corrupt_value_is_detected_deleted_counted_and_ends_the_prefix(
        make_store, redis_client, backend, damage):
    store = make_store(backend)
    kv = synthetic_kv(len(TOKENS))
    store.put(TOKENS, kv, "t")
    store.flush()
    keys = KeyScheme(LAYOUT, "raw", CHUNK).chunk_keys(TOKENS, "t")
    damage(redis_client, keys[2])
    got = from_redis(store).get(TOKENS, len(TOKENS), "t")
    assert got.shape[2] == 2 * CHUNK and torch.equal(got, kv[:, :, :2 * CHUNK])
    assert store.corrupt_entries() == 1
    assert not redis_client.exists(keys[2])
    assert store.lookup(TOKENS, "t") == 2 * CHUNK


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_redis_evicts_and_puts_never_fail(make_store, own_redis, backend):
    import redis
    admin = redis.Redis.from_url(own_redis.url)
    admin.config_set("maxmemory", "2mb")               # an empty server uses ~1 MB
    store = make_store(backend, url=own_redis.url)
    long = list(range(64 * CHUNK))                    # 64 chunks of 4 KiB: 256 KiB a put
    for salt in range(8):                             # 2 MiB into the ~1 MiB left
        store.put(long, synthetic_kv(len(long), seed=salt), str(salt))
        store.flush()
    assert store.remote_errors() == 0 and store.tier.snapshot().rejected_puts == 0
    assert 0 < admin.dbsize() < 8 * 64                # LRU evicted, nothing refused
    newest = KeyScheme(LAYOUT, "raw", CHUNK).chunk_keys(long, "7")
    assert admin.exists(*newest) > 0
    admin.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_raises_value_error_and_closed_store_raises(make_store, backend):
    store = make_store(backend)
    with pytest.raises(ValueError):
        store.put(TOKENS, torch.zeros(3, 2, len(TOKENS), 2, 8), "t")
    with pytest.raises(ValueError):
        store.put(TOKENS[:10], synthetic_kv(20), "t")
    with pytest.raises(ValueError):
        store.put(TOKENS, synthetic_kv(len(TOKENS)).double(), "t")
    store.close()
    store.close()
    with pytest.raises(StoreClosed):
        store.lookup(TOKENS, "t")


def test_a_noeviction_redis_refusing_writes_is_counted_never_raised(make_store, own_redis, caplog):
    import redis
    admin = redis.Redis.from_url(own_redis.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1mb")              # below what an empty server uses
    store = make_store("redis", url=own_redis.url)
    assert "noeviction" in caplog.text
    store.put(TOKENS, synthetic_kv(len(TOKENS)), "t")
    assert store.tier.snapshot().rejected_puts == 5 and store.remote_errors() == 0
    assert store.lookup(TOKENS, "t") == 0
    admin.close()
