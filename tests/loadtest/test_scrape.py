"""Cluster-side figures from a Prometheus text endpoint: parsing, run deltas, derived
figures, and a scrape that fails without stopping anything."""
from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from waiting import async_wait_until

from loadtest.scrape import MetricNames, MetricsScraper, parse_prometheus, summarize_snapshots

TEXT = """# HELP tandem_prefix_hit_tokens_total hits
# TYPE tandem_prefix_hit_tokens_total counter
tandem_prefix_hit_tokens_total{pool="prefill",worker="p0"} 30
tandem_prefix_hit_tokens_total{pool="prefill",worker="p1"} 10
# TYPE tandem_queue_depth gauge
tandem_queue_depth{worker="p0"} 2
tandem_queue_depth{worker="p1"} 1
# TYPE ttft_seconds histogram
ttft_seconds_bucket{le="0.1"} 3
ttft_seconds_bucket{le="+Inf"} 4
ttft_seconds_sum 0.9
ttft_seconds_count 4
"""


def test_parse_keys_series_by_labels_and_sums_by_name():
    snap = parse_prometheus(TEXT)
    assert snap.values['tandem_prefix_hit_tokens_total{pool="prefill",worker="p0"}'] == 30
    assert snap.by_name["tandem_prefix_hit_tokens_total"] == 40
    assert snap.by_name["tandem_queue_depth"] == 3
    assert "ttft_seconds_count" in snap.counters and "ttft_seconds_bucket" not in snap.by_name
    assert 'tandem_queue_depth{worker="p0"}' not in snap.counters


def test_summary_gives_counter_increases_gauge_ranges_and_derived_figures():
    names = MetricNames()
    before = parse_prometheus(TEXT + "tandem_prefix_query_tokens_total 100\n", 0)
    during = parse_prometheus(TEXT.replace("} 2", "} 9") + "tandem_prefix_query_tokens_total 150\n", 1)
    after = parse_prometheus(TEXT.replace(" 30", " 50").replace(" 0.9", " 1.5")
                             + "tandem_prefix_query_tokens_total 200\n"
                             + "tandem_kv_transfer_bytes_total 4096\n", 2)
    s = summarize_snapshots([before, during, after], names)
    assert s["counters_delta"]['tandem_prefix_hit_tokens_total{pool="prefill",worker="p0"}'] == 20
    assert s["counters_delta"]["ttft_seconds_sum"] == pytest.approx(0.6)
    assert s["gauges"]['tandem_queue_depth{worker="p0"}'] == {
        "min": 2, "mean": pytest.approx(13 / 3), "max": 9, "last": 2}
    d = s["derived"]
    assert d["prefix_hit_rate"] == pytest.approx(20 / 100)
    assert d["kv_bytes_moved"] == 4096          # absent before: counted from zero
    assert d["queue_depth_max"] == 10 and d["queue_depth_mean"] == pytest.approx(16 / 3)


def test_malformed_text_is_a_value_error():
    with pytest.raises(ValueError):
        parse_prometheus("metric{unclosed 1\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_scrape_over_http_measures_what_changed_during_the_run():
    registry = CollectorRegistry()
    hits = Counter("tandem_prefix_hit_tokens", "h", registry=registry)
    queries = Counter("tandem_prefix_query_tokens", "q", registry=registry)
    depth = Gauge("tandem_queue_depth", "d", registry=registry)

    async def metrics(request):
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def scenario():
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", interval_s=0.05)
            hits.inc(100)   # before the run: not counted
            queries.inc(100)
            await scraper.start()
            depth.set(5)
            hits.inc(30)
            queries.inc(120)
            # periodic scrapes after the start one: they see the queue at 5
            await async_wait_until(lambda: len(scraper.snapshots) >= 3, what="two periodic scrapes")
            depth.set(0)
            return await scraper.stop()
        finally:
            await runner.cleanup()

    summary = asyncio.run(scenario())
    assert summary["errors"] == [] and summary["scrapes"] >= 3
    assert summary["derived"]["prefix_hit_rate"] == pytest.approx(30 / 120)
    assert summary["derived"]["queue_depth_max"] == 5


def test_an_unreachable_endpoint_is_recorded_not_raised():
    async def scenario():
        scraper = MetricsScraper(f"http://127.0.0.1:{free_port()}/metrics", interval_s=0.05,
                                 timeout_s=1.0)
        await scraper.start()
        await async_wait_until(lambda: scraper.errors, what="a failed scrape recorded")
        return await scraper.stop()

    summary = asyncio.run(scenario())
    assert summary["scrapes"] == 0 and summary["errors"]
    assert summary["derived"] == {}
