"""The prefill worker's store flow, end to end with the real engine and store: reuse across
processes, corruption, Redis dying. The worker runs in this process (no Ray); its KV goes
through the in-process transport to a decode engine that finishes the request."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time

import pytest
import redis

from engine import LLM, SamplingParams
from kv_transfer.store import StoreConfig
from kv_transfer.store.breaker import BreakerState
from kv_transfer.store.keys import KeyScheme
from prefill_worker.testing import InProcessPrefill, decode_to_end

STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside "
         "in the park with her friends. One day, she saw a big red ball under a tree. "
         "Lily ran to the ball and picked it up. It was shiny and new. She wanted to share "
         "it with her friend Tom, so she went to his house and knocked on the door. Tom "
         "was happy to see her and they played with the ball all day long. ")

CHUNK = 32
PARAMS = SamplingParams(max_tokens=16, temperature=0.0)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="module")
def prompts():
    """Two prompts sharing their first 256 tokens, and their store-free greedy outputs."""
    llm = LLM(model="stories260K", enable_prefix_caching=False, seed=0)
    ids = llm.tokenizer.encode(STORY * 6)
    first, second = ids[:300], ids[:256] + ids[300:360]
    baseline = [o.token_ids for o in llm.generate([first, second], PARAMS)]
    return first, second, baseline


def store_config(url: str, **kw) -> StoreConfig:
    opts = dict(url=url, chunk_size=CHUNK, local_cpu_bytes=16 << 20, calibrate=False,
                op_timeout_s=0.5, breaker_failures=2, breaker_reset_s=0.2)
    opts.update(kw)
    return StoreConfig(**opts)


def run(prefill: InProcessPrefill, rid, prompt, salt="tenant-a"):
    # A slow assumed prefill speed: whenever a usable hit exists, fetching it pays.
    result, seq_kv = prefill.prefill(rid, prompt, PARAMS, salt, assume_tokens_per_s=1.0)
    return result, decode_to_end(prefill.decoder, seq_kv).token_ids


def test_a_prefix_stored_by_another_process_is_reused_with_identical_output(prompts, redis_url):
    first, second, (base_first, base_second) = prompts
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "store_writer_proc.py"), redis_url, str(CHUNK),
         "tenant-a", json.dumps([first])],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1])["token_ids"] == base_first
    with InProcessPrefill(store_config(redis_url)) as prefill:
        out, tokens = run(prefill, "reuse", second)
        assert out.store.decision == "fetch" and out.store.hit_remote == 256
        assert out.store.fetched_tokens == 256 and out.num_cached_tokens == 256
        assert tokens == base_second
        other_tenant, tokens = run(prefill, "other-tenant", second, salt="tenant-b")
        assert other_tenant.store.decision == "miss" and tokens == base_second


def _flip(client, key):
    value = bytearray(client.get(key))
    value[-5] ^= 0x10
    client.set(key, bytes(value))


def _truncate(client, key):
    client.set(key, client.get(key)[: len(client.get(key)) // 2])


def _pickle(client, key):
    client.set(key, pickle.dumps({"kv": [0.0] * 64}))


@pytest.mark.parametrize("damage", [_flip, _truncate, _pickle], ids=["flip", "truncate", "pickle"])
def test_corrupt_values_are_recomputed_with_exact_output(prompts, redis_url, damage):
    first, second, (_, base_second) = prompts
    with InProcessPrefill(store_config(redis_url)) as prefill:
        client, layout = prefill.client, prefill.worker.engine.kv_layout
        run(prefill, "write", first)
        assert client.flush()
        keys = KeyScheme(layout, "raw", CHUNK).chunk_keys(second[:256], "tenant-a")
        admin = redis.Redis.from_url(redis_url)
        damage(admin, keys[3])
        client.store.clear_local()
        out, tokens = run(prefill, "read", second)
        assert out.store.decision == "fetch" and out.store.fetched_tokens == 3 * CHUNK
        assert out.num_cached_tokens == 3 * CHUNK
        assert tokens == base_second
        stats = client.stats()
        assert stats.corrupt_entries == 1 and stats.fetch_shortfalls == 1
        assert client.flush()              # the recomputed chunk was written back, valid
        client.store.clear_local()
        again, tokens = run(prefill, "again", second)
        assert again.store.fetched_tokens == again.store.usable_tokens == 288 and tokens == base_second
        assert client.stats().corrupt_entries == 1
        admin.close()


def test_killing_redis_mid_run_loses_no_request_and_restart_resumes_hits(prompts, own_redis):
    first, second, (base_first, base_second) = prompts
    with InProcessPrefill(store_config(own_redis.url)) as prefill:
        client = prefill.client
        assert run(prefill, "r0", first)[1] == base_first
        client.flush()
        outputs = []
        for i in range(6):
            if i == 2:
                own_redis.kill()
                client.store.clear_local()
            prompt = first if i % 2 else second
            outputs.append(run(prefill, f"r{i + 1}", prompt)[1])
        assert outputs == [base_second, base_first] * 3
        assert client.breaker.state is not BreakerState.CLOSED
        assert client.stats().breaker_opens >= 1
        own_redis.start()
        deadline = time.monotonic() + 10
        while client.breaker.state is not BreakerState.CLOSED and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.breaker.state is BreakerState.CLOSED
        assert run(prefill, "after-1", first)[1] == base_first
        assert client.flush()
        client.store.clear_local()
        out, tokens = run(prefill, "after-2", second)
        assert out.store.hit_remote == 256 and out.store.fetched_tokens == 256
        assert tokens == base_second
