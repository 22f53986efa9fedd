"""Prometheus metrics of the router and, through it, of every worker (docs/metrics.md).

Router-side figures are recorded as requests flow (``RequestMetrics``, one per request).
Worker-side figures (queue depth, running sequences, KV blocks, store decisions, KV bytes
per codec) are read at scrape time: ``refresh()`` asks the backend for its cluster view
(the load every worker reported at its last poll), and a collector turns the backend's
optional ``worker_reports()`` and ``kv_bytes_sent`` into samples. Each RouterServer owns
its own registry, so several routers can live in one process.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_WORKER = ("role", "worker")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RouterMetrics:
    """Every metric of the catalog, registered in ``self.registry``."""

    def __init__(self, backend: Any = None, admission: Any = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.backend, self.admission = backend, admission
        self.requests = Counter("tandem_requests", "Requests by protocol and final status",
                                ["protocol", "status"], registry=r)
        self.finished = Counter("tandem_requests_finished", "Completed requests by finish reason",
                                ["reason"], registry=r)
        self.ttft = Histogram("tandem_ttft_seconds", "Time to first token (router arrival to "
                              "first token)", buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("tandem_tpot_seconds", "Mean time per output token after the "
                              "first, per request", buckets=_TOKEN_BUCKETS, registry=r)
        self.itl = Histogram("tandem_inter_token_seconds", "Gap between consecutive streamed "
                             "tokens", buckets=_TOKEN_BUCKETS, registry=r)
        self.e2e = Histogram("tandem_e2e_latency_seconds", "Arrival to last token",
                             buckets=_E2E_BUCKETS, registry=r)
        self.prompt_tokens = Counter("tandem_prompt_tokens", "Prompt tokens of served requests",
                                     registry=r)
        self.generation_tokens = Counter("tandem_generation_tokens", "Tokens generated",
                                         registry=r)
        self.prefix_hit = Counter("tandem_prefix_hit_tokens", "Prompt tokens served from a "
                                  "prefix cache (engine or global store)", registry=r)
        self.prefix_query = Counter("tandem_prefix_query_tokens", "Prompt tokens looked up in "
                                    "the prefix caches", registry=r)
        self.rejections = Counter("tandem_admission_rejections", "Requests refused by "
                                  "admission control, by reason", ["reason"], registry=r)
        self.refusal = Histogram("tandem_admission_refusal_seconds", "Arrival to refusal of "
                                 "refused requests", buckets=_LATENCY_BUCKETS, registry=r)
        self.inflight = Gauge("tandem_requests_inflight", "Admitted requests not finished",
                              registry=r)
        self.queued = Gauge("tandem_admission_queued_requests", "Admitted requests waiting "
                            "for their first token", registry=r)
        self.queued_tokens = Gauge("tandem_admission_queued_tokens", "Prompt tokens of "
                                   "requests waiting for their first token", registry=r)
        self.prefill_rate = Gauge("tandem_admission_prefill_tokens_per_second", "Prefill "
                                  "throughput admission control assumes", registry=r)
        self.worker_healthy = Gauge("tandem_worker_healthy", "1 when the worker is healthy",
                                    _WORKER, registry=r)
        self.queue_depth = Gauge("tandem_queue_depth", "Requests waiting in a worker's "
                                 "scheduler", _WORKER, registry=r)
        self.running = Gauge("tandem_running_sequences", "Sequences a worker is running",
                             _WORKER, registry=r)
        self.kv_used = Gauge("tandem_kv_blocks_used", "KV blocks in use", _WORKER, registry=r)
        self.kv_free = Gauge("tandem_kv_blocks_free", "KV blocks free", _WORKER, registry=r)
        r.register(_WorkerReports(self))

    async def refresh(self, timeout_s: float = 2.0) -> None:
        """Update the gauges that mirror backend and admission state (before a scrape)."""
        adm = self.admission
        if adm is not None:
            self.inflight.set(adm.inflight)
            self.queued.set(adm.queued_requests)
            self.queued_tokens.set(adm.queued_tokens)
            self.prefill_rate.set(adm.prefill_rate() or 0.0)
        if self.backend is None:
            return
        try:
            info = await asyncio.wait_for(self.backend.cluster_info(), timeout_s)
        except Exception as exc:   # a scrape must not fail because a worker is slow
            logger.warning("metrics: cluster info unavailable: %s", type(exc).__name__)
            return
        for pool in info.pools:
            for w in pool.workers:
                labels = (pool.name, w.worker_id)
                self.worker_healthy.labels(*labels).set(1 if w.health == "healthy" else 0)
                self.queue_depth.labels(*labels).set(w.waiting_requests)
                self.running.labels(*labels).set(w.running_requests)
                self.kv_used.labels(*labels).set(max(0, w.total_kv_blocks - w.free_kv_blocks))
                self.kv_free.labels(*labels).set(w.free_kv_blocks)

    async def exposition(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)

    def request(self, protocol: str) -> RequestMetrics:
        return RequestMetrics(self, protocol)


class RequestMetrics:
    """Timing of one request; ``done(status)`` exactly once."""

    __slots__ = ("m", "protocol", "start", "first", "last", "tokens", "delivered", "_done")

    def __init__(self, metrics: RouterMetrics, protocol: str) -> None:
        self.m, self.protocol = metrics, protocol
        self.start = time.monotonic()
        self.first: float | None = None
        self.last: float | None = None
        self.tokens = 0
        self.delivered = False      # the Finished event reached the client's transport
        self._done = False

    def tokens_arrived(self, n: int) -> None:
        if n <= 0:
            return
        now = time.monotonic()
        if self.first is None:
            self.first = now
            self.m.ttft.observe(now - self.start)
        else:
            gap = (now - self.last) / n
            for _ in range(min(n, 64)):
                self.m.itl.observe(gap)
        self.last = now
        self.tokens += n

    def finished(self, reason: str, usage: Any) -> None:
        m = self.m
        m.finished.labels(reason).inc()
        m.prompt_tokens.inc(usage.prompt_tokens)
        m.generation_tokens.inc(usage.completion_tokens)
        m.prefix_query.inc(usage.prompt_tokens)
        m.prefix_hit.inc(usage.cached_prompt_tokens)
        if self.first is not None and self.last is not None:
            m.e2e.observe(self.last - self.start)
            if self.tokens >= 2:
                m.tpot.observe((self.last - self.first) / (self.tokens - 1))

    def rejected(self, reason: str) -> None:
        self.m.rejections.labels(reason).inc()
        self.m.refusal.observe(time.monotonic() - self.start)

    def done(self, status: str) -> None:
        if not self._done:
            self._done = True
            self.m.requests.labels(self.protocol, status).inc()


class _WorkerReports:
    """Store decisions and KV bytes per codec, read from the backend at scrape time."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics

    def describe(self):   # no samples at registration time (the backend may not be up yet)
        return []

    def collect(self):
        backend = self.metrics.backend
        decisions = CounterMetricFamily("tandem_store_decisions", "Global store plans by "
                                        "decision (fetch, recompute, miss, skip)",
                                        labels=["worker", "decision"])
        hits = CounterMetricFamily("tandem_store_hit_tokens", "Prompt tokens found in the "
                                   "global store, by tier", labels=["worker", "tier"])
        fetched = CounterMetricFamily("tandem_store_fetched_tokens", "Prompt tokens fetched "
                                      "from the global store", labels=["worker"])
        writebacks = CounterMetricFamily("tandem_store_writebacks", "Chunk write-backs by "
                                         "outcome", labels=["worker", "outcome"])
        speed = GaugeMetricFamily("tandem_worker_prefill_tokens_per_second", "A prefill "
                                  "worker's measured prefill speed", labels=["worker"])
        kv_bytes = CounterMetricFamily("tandem_kv_transfer_bytes", "Encoded KV bytes shipped "
                                       "from prefill to decode, by codec", labels=["codec"])
        overflow = CounterMetricFamily("tandem_prefill_overflow_requests", "Requests whose prompt "
                                       "a decode worker computed because the prefill pool was busy")
        reports = getattr(backend, "worker_reports", None)
        for name, load in (reports() if callable(reports) else []):
            if load.role == "prefill":
                speed.add_metric([name], float(load.prefill_tokens_per_s))
            s = load.store or {}
            if not s:
                continue
            plans, lookups = s.get("plans", 0), s.get("lookups", 0)
            fetch, recompute = s.get("fetch_decisions", 0), s.get("recompute_decisions", 0)
            for decision, value in (("fetch", fetch), ("recompute", recompute),
                                    ("miss", max(0, lookups - fetch - recompute)),
                                    ("skip", max(0, plans - lookups))):
                decisions.add_metric([name, decision], value)
            hits.add_metric([name, "local"], s.get("hit_tokens_local", 0))
            hits.add_metric([name, "remote"], s.get("hit_tokens_remote", 0))
            fetched.add_metric([name], s.get("fetched_tokens", 0))
            for outcome in ("done", "failed", "dropped"):
                writebacks.add_metric([name, outcome], s.get(f"writebacks_{outcome}", 0))
        for codec, nbytes in dict(getattr(backend, "kv_bytes_sent", None) or {}).items():
            kv_bytes.add_metric([codec], nbytes)
        waiting = GaugeMetricFamily("tandem_prefill_overflow_waiting", "Requests waiting in the "
                                    "router for room on a prefill or decode worker")
        over = getattr(backend, "overflow", None)
        overflow.add_metric([], over.overflowed if over is not None else 0)
        waiting.add_metric([], over.waiting if over is not None else 0)
        return [decisions, hits, fetched, writebacks, speed, kv_bytes, overflow, waiting]
