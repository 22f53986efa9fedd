"""PrefixCacheClient: cost decisions, breaker and reconnect, bounded write-back (real Redis)."""
from __future__ import annotations

import pytest
import redis
import torch

from kv_transfer.store import FetchSample, PrefixCacheClient, create_store
from kv_transfer.store.breaker import BreakerState
from store_helpers import CHUNK, LAYOUT, store_config, synthetic_kv
from waiting import wait_until

TOKENS = list(range(8 * CHUNK + 1))
USABLE = 8 * CHUNK


def open_client(url: str, backend: str = "lmcache", **overrides) -> PrefixCacheClient:
    return PrefixCacheClient(create_store(store_config(url, backend=backend, **overrides), LAYOUT))


@pytest.fixture
def client(redis_url):
    with open_client(redis_url, calibrate=True) as c:
        yield c


def test_write_back_then_plan_and_fetch_round_trip(client):
    kv = synthetic_kv(len(TOKENS))
    assert client.plan(TOKENS, "t", 1.0).decision == "miss"
    assert client.write_back(TOKENS, kv, "t")
    assert client.flush()
    plan = client.plan(TOKENS, "t", 1.0)
    assert (plan.decision, plan.fetch_tokens, plan.usable_tokens) == ("fetch", USABLE, USABLE)
    assert torch.equal(client.fetch(plan), kv[:, :, :USABLE])
    stats = client.stats()
    assert (stats.fetch_decisions, stats.fetched_tokens, stats.writebacks_done) == (1, USABLE, 1)


def test_the_last_prompt_token_is_never_fetched(client):
    exact = TOKENS[:USABLE]
    client.write_back(exact, synthetic_kv(USABLE), "t")
    client.flush()
    assert client.plan(exact, "t", 1.0).fetch_tokens == USABLE - CHUNK


def test_decision_follows_the_measured_costs_both_ways(client):
    client.write_back(TOKENS, synthetic_kv(len(TOKENS)), "t")
    client.flush()
    slow_prefill = client.plan(TOKENS, "t", prefill_tokens_per_s=10.0)
    assert slow_prefill.decision == "fetch" and slow_prefill.est_fetch_s < slow_prefill.est_recompute_s
    fast_prefill = client.plan(TOKENS, "t", prefill_tokens_per_s=1e12)
    assert fast_prefill.decision == "skip" and fast_prefill.fetch_tokens == 0
    # Between the two: recompute 10x the measured fetch estimate -> fetch.
    est = client.cost.estimate(USABLE, 0)
    middle = USABLE / (10 * est)
    assert client.plan(TOKENS, "t", middle).decision == "fetch"
    # The fetch measured now is 5000x slower than before -> the same prompt recomputes.
    for _ in range(3):
        client.cost.observe("local", FetchSample(USABLE * client.cost.bytes_per_token, 5000 * est))
    plan = client.plan(TOKENS, "t", middle)
    assert plan.decision in ("recompute", "skip") and plan.fetch_tokens == 0
    assert client.stats().last_plan["decision"] == plan.decision


def test_a_paused_redis_is_measured_and_the_controller_switches_to_recompute(own_redis):
    with open_client(own_redis.url, backend="redis", calibrate=True, op_timeout_s=2.0) as c:
        c.write_back(TOKENS, synthetic_kv(len(TOKENS)), "t")
        c.flush()
        est = c.cost.estimate(0, USABLE)
        speed = USABLE / (20 * est)                     # recompute 20x the measured fetch
        assert c.plan(TOKENS, "t", speed).decision == "fetch"
        admin = redis.Redis.from_url(own_redis.url)
        for _ in range(2):                              # fault: Redis stalls 300 ms per call
            plan = c.plan(TOKENS, "t", 1.0)
            admin.execute_command("CLIENT", "PAUSE", 300, "ALL")
            assert c.fetch(plan) is not None
        admin.close()
        plan = c.plan(TOKENS, "t", speed)
        assert plan.decision in ("recompute", "skip"), plan.as_log_dict()


def test_redis_down_means_recompute_then_automatic_recovery(own_redis):
    port = own_redis.port
    with open_client(own_redis.url, breaker_failures=2, breaker_reset_s=0.2) as c:
        kv = synthetic_kv(len(TOKENS))
        c.write_back(TOKENS, kv, "t")
        c.flush()
        c.store.clear_local()
        own_redis.kill()
        for _ in range(3):                              # no exception, just no hit
            plan = c.plan(TOKENS, "t", 1.0)
            assert c.fetch(plan) is None or plan.decision != "fetch"
        assert c.breaker.state is not BreakerState.CLOSED
        assert c.stats().breaker_opens >= 1
        # While Redis is down the DRAM tier keeps working.
        other = list(range(5000, 5000 + len(TOKENS)))
        c.write_back(other, kv, "t")
        c.flush()
        assert c.plan(other, "t", 1.0).hit_local == USABLE
        own_redis.start()                               # same port, empty (no persistence)
        assert own_redis.port == port
        wait_until(lambda: c.breaker.state is BreakerState.CLOSED, what="the breaker closed again")
        c.write_back(TOKENS, kv, "t")
        assert c.flush()
        c.store.clear_local()
        plan = c.plan(TOKENS, "t", 1.0)
        assert (plan.decision, plan.hit_remote) == ("fetch", USABLE)
        assert torch.equal(c.fetch(plan), kv[:, :, :USABLE])


def test_native_backend_skips_the_store_while_the_breaker_is_open(own_redis):
    with open_client(own_redis.url, backend="redis", breaker_failures=1, breaker_reset_s=0.2) as c:
        own_redis.kill()
        c.plan(TOKENS, "t", 1.0)
        plan = c.plan(TOKENS, "t", 1.0)
        assert plan.decision == "skip" and plan.reason.startswith("breaker")
        assert not c.write_back(TOKENS, synthetic_kv(len(TOKENS)), "t")
        own_redis.start()
        wait_until(lambda: c.breaker.state is BreakerState.CLOSED, what="the breaker closed again")
        assert c.plan(TOKENS, "t", 1.0).decision == "miss"


def test_write_back_is_bounded_and_never_waits_for_a_stalled_redis(own_redis):
    with open_client(own_redis.url, backend="redis", op_timeout_s=5.0, writeback_queue=2,
                     writeback_max_bytes=1 << 30) as c:
        admin = redis.Redis.from_url(own_redis.url)
        admin.execute_command("CLIENT", "PAUSE", 2500, "WRITE")   # fault: writes stall
        accepted = [c.write_back([i] + TOKENS[1:], synthetic_kv(len(TOKENS)), "t")
                    for i in range(8)]
        stats = c.stats()
        assert accepted.count(False) >= 5 and stats.writebacks_dropped >= 5
        assert stats.writebacks_done == 0               # returned before any write finished
        assert c.flush(10)
        admin.close()


def test_bad_arguments_raise_value_errors(client):
    with pytest.raises(ValueError):
        client.plan(TOKENS, "t", 0.0)
    with pytest.raises(ValueError):
        client.write_back(TOKENS, torch.zeros(1, 2, 4, 1, 1), "t")
    assert client.plan(TOKENS[:CHUNK], "t", 1.0).decision == "skip"


def test_background_write_failures_reach_the_breaker(own_redis):
    with open_client(own_redis.url, op_timeout_s=0.3, breaker_failures=1) as c:
        admin = redis.Redis.from_url(own_redis.url)
        admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")   # fault: SETs time out
        c.write_back(TOKENS, synthetic_kv(len(TOKENS)), "t")
        assert c.flush(10)                        # LMCache's background SET timed out...
        assert c.store.write_errors() >= 1
        c.write_back(list(range(7000, 7000 + len(TOKENS))), synthetic_kv(len(TOKENS)), "t")
        assert c.flush(10)
        assert c.stats().breaker_opens >= 1       # ...and the next write-back reported it
        admin.close()
