"""Tenant limits shared by several routers through a real Redis (``router.limits.shared_url``):
requests in flight on either router count against one concurrency cap and one rate, a
router that dies leaks no slot for longer than its lease, and a Redis outage fails open."""
from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from engine_hold import engine_held
from frontdoor_helpers import make_llm, router_config, start_router

from protos.tandem.v1 import generate_pb2, tandem_service_pb2_grpc
from router.admission import AdmissionRejected
from router.config import AdmissionConfig, LimitsConfig
from router.shared_limits import SharedTenantLimiter
from waiting import wait_until

LEASES = "tandem:limits::leases"      # the default tenant's in-flight leases


@pytest.fixture
def redis_client(redis_url):
    import redis
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _send(router, results: list, max_tokens: int = 2) -> threading.Thread:
    def run():
        with grpc.insecure_channel(router.target) as channel:
            req = generate_pb2.GenerateRequest(text="Once upon a time")
            req.sampling.max_tokens = max_tokens
            try:
                results.append(("ok", list(tandem_service_pb2_grpc.TandemStub(channel).Generate(req, timeout=60))))
            except grpc.RpcError as exc:
                results.append((exc.code(), exc.details()))
    t = threading.Thread(target=run)
    t.start()
    return t


def _routers(redis_url: str, **limits):
    cfg = router_config(limits=LimitsConfig(shared_url=redis_url, **limits),
                        admission=AdmissionConfig(enabled=False))
    return start_router(make_llm(), config=cfg), start_router(make_llm(), config=cfg)


def test_in_flight_requests_on_any_router_count_against_one_concurrency_cap(redis_url, redis_client):
    a, b = _routers(redis_url, tenant_max_concurrency=2)
    try:
        results: list = []
        with engine_held(a), engine_held(b):          # requests stay in flight
            running = [_send(a, results), _send(b, results)]
            wait_until(lambda: redis_client.zcard(LEASES) == 2, 30, "both requests in flight")
            refused: list = []
            for router in (a, b):                         # a third, on either router: refused
                _send(router, refused).join(30)
            assert [code for code, _ in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
            assert all("has 2 requests in flight, its limit is 2" in d for _, d in refused)
        for t in running:
            t.join(60)
        assert [code for code, _ in results] == ["ok", "ok"]
        wait_until(lambda: redis_client.zcard(LEASES) == 0, 10, "the leases to be given back")
    finally:
        a.stop()
        b.stop()


def test_one_rate_for_the_tenant_across_routers(redis_url, redis_client):
    a, b = _routers(redis_url, tenant_rps=0.5, tenant_burst=2)
    try:
        results: list = []
        for router in (a, b, a):
            _send(router, results).join(30)
        assert [code for code, _ in results][:2] == ["ok", "ok"]
        assert results[2][0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "over its rate" in results[2][1]
    finally:
        a.stop()
        b.stop()


def test_a_dead_routers_leases_expire_and_a_redis_outage_fails_open(redis_url):

    async def scenario():
        limits = LimitsConfig(tenant_max_concurrency=1)
        dead = SharedTenantLimiter(limits, redis_url, lease_ttl_s=0.5)
        await dead.acquire_async("t")                     # never released: its router died
        live = SharedTenantLimiter(limits, redis_url, lease_ttl_s=0.5)
        with pytest.raises(AdmissionRejected) as info:
            await live.acquire_async("t")
        assert info.value.reason == "tenant_concurrency"
        await asyncio.sleep(0.7)                          # past the lease's life
        lease = await live.acquire_async("t")
        lease.release()
        await asyncio.sleep(0.1)
        gone = SharedTenantLimiter(limits, "redis://127.0.0.1:1/0", lease_ttl_s=0.5)
        assert (await gone.acquire_async("t")).tenant == "t"      # no Redis: served, not refused
        for limiter in (dead, live, gone):
            await limiter.close()
    asyncio.run(scenario())


def test_a_resumed_stream_takes_over_its_live_lease_and_a_stranger_resume_is_checked_as_new(redis_url):

    async def scenario():
        limits = LimitsConfig(tenant_max_concurrency=1, tenant_rps=0.01, tenant_burst=1)
        dead = SharedTenantLimiter(limits, redis_url, lease_ttl_s=5.0, prefix="tandem:resume")
        await dead.acquire_async("t", request_id="r1")        # its router dies mid-stream
        live = SharedTenantLimiter(limits, redis_url, lease_ttl_s=5.0, prefix="tandem:resume")
        lease = await live.acquire_async("t", request_id="r1", resumed=True)   # at cap, no rate left
        for rid, resumed in (("r2", True), ("r3", False)):   # not its lease: the cap holds
            with pytest.raises(AdmissionRejected) as info:
                await live.acquire_async("t", request_id=rid, resumed=resumed)
            assert info.value.reason == "tenant_concurrency"
        lease.release()
        await asyncio.sleep(0.1)
        with pytest.raises(AdmissionRejected) as info:        # the cap is free, the rate is not
            await live.acquire_async("t", request_id="r4", resumed=True)
        assert info.value.reason == "tenant_rate"
        for limiter in (dead, live):
            await limiter.close()
    asyncio.run(scenario())
