"""The metrics endpoint of a real router over a real engine exposes the documented catalog
(docs/metrics.md), the figures move with traffic, the dashboard uses only catalogued names,
and log lines about a request carry its id."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from frontdoor_helpers import (FrontDoorRouter, make_llm, router_config, sample, scrape, start_router,
                               wait_until)

from router.backends.local import LocalBackend
from router.logging_context import JsonFormatter, request_context
from tandem_client import TandemClient

REPO = Path(__file__).resolve().parents[2]
LONG_PROMPT = "The little dog ran to the big tree and barked at the cat. " * 6


def catalog() -> list[str]:
    text = (REPO / "docs" / "metrics.md").read_text()
    return re.findall(r"^\| `(tandem_[a-z0-9_]+)` \|", text, re.M)


def exposed_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


@pytest.fixture(scope="module")
def router():
    r = start_router()
    yield r
    r.stop()


def test_every_catalogued_metric_is_exposed(router):
    names = catalog()
    assert len(names) >= 25 and len(set(names)) == len(names)
    missing = set(names) - exposed_names(scrape(router.metrics_url))
    assert not missing


class SlowCleanupBackend(LocalBackend):
    """Fault injection: the backend's clean-up after a finished stream takes 0.3 s (a Ray
    backend releasing KV on a remote worker), so the client hangs up during it."""

    async def generate(self, request):
        try:
            async for event in super().generate(request):
                yield event
        finally:
            await asyncio.sleep(0.3)


def test_short_calls_that_got_their_whole_result_count_as_ok_not_cancelled():
    router = FrontDoorRouter(SlowCleanupBackend(make_llm()), router_config())
    router.start()
    try:
        for i in range(6):                  # a client per call, closed at once (`tandem generate`)
            with TandemClient(router.target) as client:
                assert client.generate("Once upon a time", max_tokens=1 + i % 3).finish_reason
        router.wait_idle()

        def counts() -> dict:
            text = scrape(router.metrics_url)
            return {status: sample(text, "tandem_requests_total", protocol="grpc", status=status)
                    for status in ("ok", "cancelled", "internal")}
        # A call is counted when its handler ends, after the backend's 0.3 s clean-up.
        wait_until(lambda: sum(counts().values()) == 6, what="all six calls counted")
        assert counts() == {"ok": 6, "cancelled": 0, "internal": 0}
    finally:
        router.stop()


def test_metrics_move_when_traffic_flows(router):
    before = scrape(router.metrics_url)
    with TandemClient(router.target) as client:
        for _ in range(2):
            client.generate(LONG_PROMPT, max_tokens=8, temperature=0)
        stream = client.stream("Once upon a time", max_tokens=300, ignore_eos=True)
        next(iter(stream))
        during = scrape(router.metrics_url)      # one request is decoding now
        stream.cancel()
    router.wait_idle()

    def counted() -> float:     # a call is counted when its handler ends
        text = scrape(router.metrics_url)
        return sum(sample(text, "tandem_requests_total", protocol="grpc", status=s) -
                   sample(before, "tandem_requests_total", protocol="grpc", status=s)
                   for s in ("ok", "cancelled", "internal"))
    wait_until(lambda: counted() >= 3, what="the three calls counted")
    after = scrape(router.metrics_url)

    def moved(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("tandem_requests_total", protocol="grpc", status="ok") == 2
    assert moved("tandem_requests_total", protocol="grpc", status="cancelled") == 1
    assert moved("tandem_requests_finished_total", reason="length") == 2
    for hist in ("tandem_ttft_seconds_count", "tandem_e2e_latency_seconds_count",
                 "tandem_tpot_seconds_count"):
        assert moved(hist) >= 2, hist
    assert moved("tandem_ttft_seconds_count") == 3
    assert moved("tandem_inter_token_seconds_count") >= 14
    assert moved("tandem_generation_tokens_total") == 16
    prompt_tokens = moved("tandem_prompt_tokens_total")
    assert prompt_tokens > 100 and moved("tandem_prefix_query_tokens_total") == prompt_tokens
    assert moved("tandem_prefix_hit_tokens_total") >= 32      # the second long prompt hit
    assert sample(during, "tandem_requests_inflight") == 1
    assert sample(during, "tandem_running_sequences", role="colocated") == 1
    assert sample(during, "tandem_kv_blocks_used") > sample(after, "tandem_kv_blocks_used")
    assert sample(after, "tandem_kv_blocks_free") > 0
    assert sample(after, "tandem_worker_healthy", worker="local-0") == 1
    assert sample(after, "tandem_admission_prefill_tokens_per_second") >= 0


def test_the_grafana_dashboard_uses_catalogued_metrics_only():
    dashboard = json.loads((REPO / "dashboards" / "tandem.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    known = set(catalog())
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b(tandem_[a-z0-9_]+)", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert name in known or base in known, name
            used.add(base if base in known else name)
    assert {"tandem_ttft_seconds", "tandem_tpot_seconds", "tandem_requests_total",
            "tandem_admission_rejections_total", "tandem_kv_blocks_used",
            "tandem_kv_transfer_bytes_total", "tandem_store_decisions_total"} <= used


def test_log_lines_about_a_request_carry_its_id(router, caplog):
    caplog.set_level(logging.DEBUG, logger="router")
    with TandemClient(router.target) as client:
        client.generate("Once upon a time", max_tokens=2, request_id="log-me-7", tenant="t1")
    lines = [r for r in caplog.records if getattr(r, "request_id", "-") == "log-me-7"]
    assert lines and all(r.tenant == "t1" for r in lines)
    record = lines[0]
    out = json.loads(JsonFormatter().format(record))
    assert out["request_id"] == "log-me-7" and out["tenant"] == "t1" and out["message"]
    other = logging.getLogger("router.test").makeRecord("router.test", logging.INFO, __file__,
                                                        1, "outside", (), None)
    assert other.request_id == "-"
    seen = {}

    def worker():
        with request_context("inner-1", "t2"):
            seen["id"] = logging.getLogger("x").makeRecord("x", 20, __file__, 1, "m", (),
                                                           None).request_id
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["id"] == "inner-1"
