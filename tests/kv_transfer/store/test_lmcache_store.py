"""LMCache as the store engine: tiers, our keys and connector, and its pitfalls handled."""
from __future__ import annotations

import multiprocessing
import os
import threading

import pytest
import torch

from kv_transfer.store import StoreConfig, StoreUnavailable, create_store
from kv_transfer.store.keys import KeyScheme
from store_helpers import CHUNK, LAYOUT, synthetic_kv

TOKENS = list(range(4 * CHUNK))


def test_dram_tier_then_redis_tier_then_dram_again(make_store):
    store = make_store("lmcache")
    kv = synthetic_kv(len(TOKENS))
    store.put(TOKENS, kv, "t")
    store.flush()
    assert store.lookup_tiers(TOKENS, "t").local == 4 * CHUNK
    store.clear_local()
    hits = store.lookup_tiers(TOKENS, "t")
    assert (hits.local, hits.remote) == (0, 4 * CHUNK)
    assert torch.equal(store.get(TOKENS, 2 * CHUNK, "t"), kv[:, :, :2 * CHUNK])
    hits = store.lookup_tiers(TOKENS, "t")          # what was fetched is now in DRAM
    assert (hits.local, hits.remote) == (2 * CHUNK, 2 * CHUNK)


def test_redis_keys_are_our_scheme_and_lmcache_key_strings(make_store, redis_client):
    from lmcache.utils import CacheEngineKey
    store = make_store("lmcache")
    store.put(TOKENS, synthetic_kv(len(TOKENS)), "t")
    store.flush()
    scheme = KeyScheme(LAYOUT, "raw", CHUNK)
    ours = scheme.chunk_keys(TOKENS, "t")
    assert sorted(k.decode() for k in redis_client.keys("*")) == sorted(ours)
    lm = CacheEngineKey(scheme.prefix, 1, 0, int.from_bytes(scheme.chunk_hashes(TOKENS, "t")[0], "big"),
                        torch.float32, None)
    assert lm.to_string() == ours[0]


def test_paged_engine_kv_goes_through_our_connector(make_store):
    store = make_store("lmcache")
    kv = synthetic_kv(len(TOKENS))
    cache = torch.zeros(LAYOUT.num_layers, 2, 200, LAYOUT.num_kv_heads, LAYOUT.head_dim)
    slots = torch.randperm(200)[:len(TOKENS)]
    cache.index_copy_(2, slots, kv)
    store.engine.store(TOKENS, kv_cache=cache, slot_mapping=slots,
                       request_configs={"tandem.tenant_salt": b"t"})
    out = torch.zeros_like(cache)
    mask = store.engine.retrieve(TOKENS, kv_cache=out, slot_mapping=slots,
                                 request_configs={"tandem.tenant_salt": b"t"})
    assert int(mask.sum()) == len(TOKENS)
    assert torch.equal(out.index_select(2, slots), kv)


def test_process_state_is_restored_and_nothing_is_left_running(redis_url):
    assert os.environ["LMCACHE_TRACK_USAGE"] == "false" and os.environ["DO_NOT_TRACK"] == "1"
    method = multiprocessing.get_start_method(allow_none=True)
    before = set(threading.enumerate())
    store = create_store(StoreConfig(url=redis_url, chunk_size=CHUNK, local_cpu_bytes=1 << 20,
                                     calibrate=False), LAYOUT)
    assert multiprocessing.get_start_method(allow_none=True) == method
    store.put(TOKENS, synthetic_kv(len(TOKENS)), "t")
    store.flush()
    store.close()
    leftover = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftover == []


def test_close_returns_while_redis_is_unreachable(own_redis):
    store = create_store(StoreConfig(url=own_redis.url, chunk_size=CHUNK, calibrate=False,
                                     local_cpu_bytes=1 << 20, op_timeout_s=0.3), LAYOUT)
    store.put(TOKENS, synthetic_kv(len(TOKENS)), "t")
    own_redis.kill()
    other = list(range(100, 100 + 4 * CHUNK))
    with pytest.raises(StoreUnavailable):
        store.put(other, synthetic_kv(4 * CHUNK), "t")
    assert store.lookup_tiers(other, "t").local == 4 * CHUNK   # DRAM took it anyway
    store.close()          # the upstream redis connector hangs forever here
    assert store.remote_errors() >= 1


def test_embedded_default_starts_and_stops_a_private_server():
    store = create_store(StoreConfig(chunk_size=CHUNK, local_cpu_bytes=1 << 20, calibrate=False),
                         LAYOUT)
    server = store._server
    assert server is not None and server.running and store.url == server.url
    store.put(TOKENS, synthetic_kv(len(TOKENS)), "t")
    store.close()
    assert not server.running


def test_a_dram_tier_of_zero_still_serves_redis(make_store):
    store = make_store("lmcache", local_cpu_bytes=0)
    kv = synthetic_kv(len(TOKENS))
    store.put(TOKENS, kv, "t")
    store.flush()
    assert store.lookup_tiers(TOKENS, "t").local == 0
    assert torch.equal(store.get(TOKENS, len(TOKENS), "t"), kv)


@pytest.mark.parametrize("tier", ["local", "remote"])
def test_fetch_probes_measure_real_fetches_and_leave_no_entries(make_store, redis_client, tier):
    store = make_store("lmcache")
    sample = store.measure_fetch(tier, 2)
    assert sample.raw_bytes == 2 * CHUNK * LAYOUT.num_layers * 2 * LAYOUT.num_kv_heads * \
        LAYOUT.head_dim * 4 and sample.seconds > 0
    assert redis_client.dbsize() == 0
