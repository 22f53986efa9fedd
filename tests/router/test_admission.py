"""SLO-aware admission, bounded queue and per-tenant limits: the controller's arithmetic on a
test clock, then refusals on a real router (gRPC RESOURCE_EXHAUSTED / HTTP 429 with a
retry-after hint) while the real engine is held busy."""
from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import grpc
import pytest

from frontdoor_helpers import (KEY_A, KEY_B, router_config, sample, scrape, start_router,
                               wait_until, write_keys)

from router.config import AdmissionConfig, LimitsConfig, SLOConfig
from protos.tandem.v1 import generate_pb2, tandem_service_pb2_grpc
from router.admission import AdmissionController, AdmissionRejected, Capacity, TpotModel
from router.auth import TenantLimits
from router.ratelimit import TenantLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def controller(clock, ttft_ms=1000.0, tpot_ms=100.0, margin=0.0, max_queue=8, max_inflight=64,
               capacity=None):
    return AdmissionController(AdmissionConfig(miss_margin=margin, max_queue=max_queue),
                               SLOConfig(ttft_ms=ttft_ms, tpot_ms=tpot_ms), max_inflight,
                               (lambda: capacity), clock)


def test_queue_estimate_refuses_what_would_miss_the_ttft_objective_and_never_an_idle_router():
    clock = Clock()
    ctl = controller(clock, ttft_ms=1000, capacity=Capacity(prefill_tokens_per_s=1000.0))
    big = ctl.admit("big", 5000)            # alone it needs 5 s, but waiting cannot help it
    assert ctl.estimate(100).ttft_ms == pytest.approx(5100.0)
    with pytest.raises(AdmissionRejected) as info:
        ctl.admit("next", 100)
    assert info.value.reason == "ttft_slo"
    assert info.value.retry_after_s == pytest.approx(4.1)
    clock.now += 5.0
    big.first_token()                       # 5000 tokens in 5 busy seconds: 1000 tokens/s
    assert ctl.prefill_rate() == pytest.approx(1000.0)
    small = [ctl.admit(f"r{i}", 300) for i in range(3)]    # 900 ms of prefill queued
    with pytest.raises(AdmissionRejected):
        ctl.admit("r3", 200)                # would wait 1100 ms
    assert ctl.queued_requests == 3 and ctl.queued_tokens == 900
    for t in small:
        t.release()
    assert ctl.queued_tokens == 0 and ctl.inflight == 1
    big.release(completion_tokens=1)
    assert ctl.inflight == 0


def _served(ctl, clock, rid, tokens, ttft_s):
    """Admit a request alone and give it its first token ``ttft_s`` later."""
    t = ctl.admit(rid, tokens)
    clock.now += ttft_s
    t.first_token()
    t.release(1)
    clock.now += 10.0


def test_ttft_is_learned_as_a_fixed_cost_plus_a_cost_per_queued_token_and_margin_tolerates_misses():
    clock = Clock()
    ctl = controller(clock, ttft_ms=100, margin=0.5)
    assert ctl.prefill_rate() is None and ctl.estimate(10).ttft_ms is None   # nothing known
    for i in range(4):                      # 10 ms a request + 0.2 ms a token (5000 tokens/s)
        _served(ctl, clock, f"s{i}", 20, 0.014)
        _served(ctl, clock, f"l{i}", 400, 0.090)
    assert ctl.prefill_rate() == pytest.approx(5000.0)
    assert ctl.estimate(100).ttft_ms == pytest.approx(30.0)
    ctl.admit("a", 300)                     # alone: admitted whatever the estimate
    ctl.admit("b", 399)                     # 10 + 0.2 * 699 = 149.8 ms < 100 ms * (1 + 0.5)
    with pytest.raises(AdmissionRejected) as info:
        ctl.admit("c", 2)                   # 150.2 ms
    assert info.value.reason == "ttft_slo"


def test_an_idle_cluster_admits_a_burst_that_fits_after_tiny_invalid_and_cancelled_requests():
    """Cheap traffic teaches the fixed cost, not a low throughput; requests that never got a
    first token (invalid, cancelled) teach nothing however long they waited."""
    clock = Clock()
    capacity = Capacity(prefill_tokens_per_s=3552.0 + 563.0, prefill_workers=2)
    ctl = controller(clock, ttft_ms=1000, max_queue=256, max_inflight=1024, capacity=capacity)
    for i in range(50):
        _served(ctl, clock, f"tiny{i}", 3, 0.030)           # 3-token prompts, 30 ms each
        bad = ctl.admit(f"bad{i}", 1)                       # refused by the backend at once
        bad.release()
        slow = ctl.admit(f"gone{i}", 64)                    # the client left before prefill
        clock.now += 2.0
        slow.release()
    tickets = [ctl.admit(f"burst{i}", 16) for i in range(200)]   # all arrive at once
    est = ctl.estimate(16).ttft_ms
    assert len(tickets) == 200 and est < 1000
    assert est == pytest.approx(30 - 3 * 1000 / 4115 + 201 * 16 * 1000 / 4115, rel=1e-6)


def test_a_cold_start_lets_one_request_per_prefill_worker_wait_until_a_first_token_is_measured():
    clock = Clock()
    ctl = controller(clock, capacity=Capacity(prefill_workers=2))
    first, second = ctl.admit("a", 100), ctl.admit("b", 100)
    with pytest.raises(AdmissionRejected) as info:
        ctl.admit("c", 100)
    assert info.value.reason == "ttft_unknown" and info.value.retry_after_s > 0
    clock.now += 0.1
    first.first_token()                    # 100 ms for 200 tokens ahead: now it can estimate
    assert ctl.estimate(100).ttft_ms == pytest.approx(100.0)
    ctl.admit("c", 100)
    second.release()


def test_the_samples_of_one_request_share_its_prefill_in_admissions_books():
    """n > 1: the first sample is judged as any request; the others queue no prompt tokens,
    pass a cold start and the TTFT check (they share the first one's prefill), teach the
    TTFT line nothing, and still count for the queue bound."""
    clock = Clock()
    ctl = controller(clock, ttft_ms=1000, max_queue=4)
    first = ctl.admit("g-0", 100, group="g")                # a cold start: it waits alone...
    rest = [ctl.admit("g-1", 100, group="g")]               # ... with its siblings
    with pytest.raises(AdmissionRejected) as info:
        ctl.admit("other", 10)                              # but no one else
    assert info.value.reason == "ttft_unknown"
    rest += [ctl.admit(f"g-{i}", 100, group="g") for i in (2, 3)]
    assert ctl.queued_tokens == 100 and ctl.queued_requests == 4 and rest[0].sibling
    with pytest.raises(AdmissionRejected) as info:
        ctl.admit("g-4", 100, group="g")
    assert info.value.reason == "queue_full"
    clock.now += 0.5
    for t in [first, *rest]:
        t.first_token()
    assert ctl.ttft.n == 1 and ctl.queued_tokens == 0      # one observation: the first's
    for t in [first, *rest]:
        t.release(1)
    assert ctl.inflight == 0
    assert ctl.admit("g-5", 100, group="g").sibling is False     # a later group of that name


def test_bounded_queue_and_inflight_refuse_at_once():
    clock = Clock()
    ctl = controller(clock, max_queue=2, max_inflight=3,
                     capacity=Capacity(prefill_tokens_per_s=1e6))
    a, b = ctl.admit("a", 10), ctl.admit("b", 10)
    with pytest.raises(AdmissionRejected) as info:
        ctl.admit("c", 10)
    assert info.value.reason == "queue_full" and info.value.retry_after_s > 0
    a.first_token()
    ctl.admit("c", 10)
    with pytest.raises(AdmissionRejected) as info:
        ctl.admit("d", 10)
    assert info.value.reason == "inflight_full"
    b.release()
    b.release()                             # idempotent
    assert ctl.inflight == 2


def test_tpot_is_estimated_from_decode_load_and_refused_when_it_would_miss():
    model = TpotModel()
    assert model.predict(4) is None
    for batch, tpot in [(1, 12.0), (2, 14.0), (4, 18.0), (8, 26.0)]:
        model.observe(batch, tpot)
    assert model.predict(16) == pytest.approx(42.0)
    clock = Clock()
    ctl = controller(clock, tpot_ms=30.5, capacity=Capacity(decode_workers=2))
    ctl.tpot = model
    running = []
    for i in range(19):                     # 19 decoding on 2 workers: 10.5 with one more
        t = ctl.admit(f"d{i}", 1)
        t.first_token()
        running.append(t)
    with pytest.raises(AdmissionRejected) as info:
        ctl.admit("one-more", 1)
    assert info.value.reason == "tpot_slo"
    for t in running[:10]:
        t.release(1)
    ctl.admit("fits-now", 1)


def test_tenant_rate_and_concurrency_limits_with_per_key_overrides():
    clock = Clock()
    limiter = TenantLimiter(LimitsConfig(tenant_rps=2.0, tenant_burst=2,
                                         tenant_max_concurrency=3), clock)
    leases = [limiter.acquire("t"), limiter.acquire("t")]
    with pytest.raises(AdmissionRejected) as info:
        limiter.acquire("t")
    assert info.value.reason == "tenant_rate" and info.value.retry_after_s == pytest.approx(0.5)
    limiter.acquire("other")                # tenants do not share a bucket
    clock.now += 0.5
    leases.append(limiter.acquire("t"))
    clock.now += 10
    with pytest.raises(AdmissionRejected) as info:
        limiter.acquire("t")
    assert info.value.reason == "tenant_concurrency"
    leases[0].release()
    leases[0].release()
    leases.append(limiter.acquire("t"))
    assert limiter.active("t") == 3
    vip = TenantLimits(rps=100.0, burst=100, concurrency=10)
    for _ in range(10):
        limiter.acquire("vip", vip)
    assert TenantLimiter(LimitsConfig()).acquire("anyone").limiter is None   # no limits: no state


# -- on a real router --------------------------------------------------------------------
def _hold_engine(router, seconds: float):
    """Keep the engine thread busy: requests sent meanwhile wait for their first token."""
    return asyncio.run_coroutine_threadsafe(
        router.backend.run_on_engine(lambda e: time.sleep(seconds)), router.loop)


def _grpc(router, key=None, max_tokens=2):
    with grpc.insecure_channel(router.target) as channel:
        stub = tandem_service_pb2_grpc.TandemStub(channel)
        req = generate_pb2.GenerateRequest(text="Once upon a time")
        req.sampling.max_tokens = max_tokens
        metadata = [("authorization", f"Bearer {key}")] if key else []
        call = stub.Generate(req, metadata=metadata, timeout=30)
        try:
            return list(call), None
        except grpc.RpcError as exc:
            return None, exc


def _http(router, key=None):
    async def go():
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with aiohttp.ClientSession() as s:
            async with s.post(router.http_url + "/v1/completions", headers=headers,
                              json={"prompt": "Hi", "max_tokens": 2}) as resp:
                return resp.status, resp.headers.copy(), await resp.json()
    return asyncio.run(go())


def _in_background(fn, *args):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", fn(*args)), daemon=True)
    thread.start()
    return thread, out


def _assert_refused(router, reason, key=None):
    _, exc = _grpc(router, key)
    assert exc is not None and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    hint = dict(exc.trailing_metadata())["retry-after-ms"]
    assert int(hint) > 0
    status, headers, body = _http(router, key)
    assert status == 429 and body["error"]["code"] == reason
    assert int(headers["Retry-After"]) >= 1 and int(headers["retry-after-ms"]) > 0


def test_a_full_queue_is_refused_with_429_and_retry_after_and_the_queued_request_completes():
    router = start_router(config=router_config(admission=AdmissionConfig(max_queue=1)))
    try:
        gateway = router.server.gateway
        hold = _hold_engine(router, 1.5)
        thread, out = _in_background(_grpc, router)
        wait_until(lambda: gateway.admission.queued_requests == 1, what="one request queued")
        _assert_refused(router, "queue_full")
        hold.result(10)
        thread.join(30)
        assert out["result"][0][-1].HasField("finished")
        text = scrape(router.metrics_url)
        assert sample(text, "tandem_admission_rejections_total", reason="queue_full") == 2
        assert sample(text, "tandem_admission_refusal_seconds_count") == 2
    finally:
        router.stop()


def test_the_ttft_estimate_refuses_requests_queued_behind_a_busy_engine():
    router = start_router(config=router_config(), slo=SLOConfig(ttft_ms=1.0))
    try:
        adm = router.server.gateway.admission
        hold = _hold_engine(router, 0.3)
        assert _grpc(router)[0] is not None     # idle: admitted although it will miss
        hold.result(10)
        assert adm.estimate(1).ttft_ms is not None   # learned from that request
        hold = _hold_engine(router, 1.5)
        thread, out = _in_background(_grpc, router)
        wait_until(lambda: adm.queued_requests == 1, what="one request queued")
        _assert_refused(router, "ttft_slo")
        hold.result(10)
        thread.join(30)
        assert out["result"][0] is not None
    finally:
        router.stop()


def test_per_tenant_concurrency_and_rate_come_from_the_keys_file(tmp_path):
    keys = write_keys(tmp_path, f"alpha:{KEY_A} concurrency=1\nbravo:{KEY_B} rps=0.2 burst=1\n")
    router = start_router(config=router_config(keys))
    try:
        hold = _hold_engine(router, 1.5)
        thread, out = _in_background(_grpc, router, KEY_A)
        wait_until(lambda: router.server.gateway.limiter.active("alpha") == 1,
                   what="alpha's request in flight")
        _assert_refused(router, "tenant_concurrency", KEY_A)
        hold.result(10)
        thread.join(30)
        assert out["result"][0] is not None
        assert _grpc(router, KEY_B)[0] is not None      # bravo's one token
        _assert_refused(router, "tenant_rate", KEY_B)  # ... and no second within 5 s
        text = scrape(router.metrics_url)
        assert sample(text, "tandem_admission_rejections_total", reason="tenant_rate") == 2
    finally:
        router.stop()


def test_with_worker_queues_the_queue_other_routers_filled_counts_and_without_it_does_not():
    """Several routers: another router's requests sit in the workers' queues, which this
    router's books do not hold; with ``worker_queues`` the workers' reports count."""
    clock = Clock()
    cap = Capacity(prefill_tokens_per_s=1000.0, queued_prompt_tokens=4000, decoding=12, decode_workers=2)
    for shared in (False, True):
        ctl = AdmissionController(AdmissionConfig(worker_queues=shared), SLOConfig(ttft_ms=1000, tpot_ms=100),
                                  64, (lambda: cap), clock)
        if not shared:
            assert ctl.estimate(100).ttft_ms == pytest.approx(100.0)     # its own books: empty
            ctl.admit("a", 100).release()
            continue
        assert ctl.estimate(100).ttft_ms == pytest.approx(4100.0)        # 4000 queued elsewhere
        with pytest.raises(AdmissionRejected) as info:
            ctl.admit("a", 100)
        assert info.value.reason == "ttft_slo"
        own = controller(clock, capacity=Capacity(prefill_tokens_per_s=1000.0, queued_prompt_tokens=0))
        own.cfg.worker_queues = True
        own.admit("b", 300)
        assert own.estimate(100).ttft_ms == pytest.approx(400.0), "its own books when the reports say less"
