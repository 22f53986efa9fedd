"""Cluster-side figures scraped from a Prometheus text endpoint during a run (optional).

Counters (and histogram/summary series) are reported as their increase over the run;
gauges as min/mean/max over periodic samples. Derived figures use the metric names in
``MetricNames`` (summed over labels): prefix hit rate, KV bytes moved, queue depth.
A scrape that fails is recorded in the summary; it never stops the run.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger(__name__)

_COUNTER_TYPES = {"counter", "histogram", "summary", "gaugehistogram"}


@dataclass(slots=True)
class MetricNames:
    """Sample names (as exposed, with ``_total``) behind the derived figures."""
    prefix_hit_tokens: str = "tandem_prefix_hit_tokens_total"
    prefix_query_tokens: str = "tandem_prefix_query_tokens_total"
    kv_bytes_moved: str = "tandem_kv_transfer_bytes_total"
    queue_depth: str = "tandem_queue_depth"


@dataclass(slots=True)
class Snapshot:
    """One scrape: ``values`` by series key ``name{label="v",...}``; ``counters`` the keys
    of counter-like series; ``by_name`` sums over labels."""
    at: float
    values: dict[str, float]
    counters: set[str]
    by_name: dict[str, float]


def parse_prometheus(text: str, at: float = 0.0) -> Snapshot:
    """Parse Prometheus text exposition; raise ValueError on malformed text."""
    values: dict[str, float] = {}
    counters: set[str] = set()
    by_name: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue        # creation timestamps, not measurements
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            values[key] = float(sample.value)
            if family.type in _COUNTER_TYPES:
                counters.add(key)
            if not sample.name.endswith("_bucket"):
                by_name[sample.name] = by_name.get(sample.name, 0.0) + float(sample.value)
    return Snapshot(at, values, counters, by_name)


class MetricsScraper:
    """Scrapes ``url`` at start, every ``interval_s`` during the run, and at the end."""

    def __init__(self, url: str, interval_s: float = 1.0, names: MetricNames | None = None,
                 timeout_s: float = 5.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.url, self.interval_s, self.timeout_s = url, interval_s, timeout_s
        self.names = names or MetricNames()
        self.snapshots: list[Snapshot] = []
        self.errors: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def scrape(self) -> Snapshot | None:
        if self._session is None:
            raise RuntimeError("scraper not started")
        try:
            async with self._session.get(
                    self.url, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                text = await resp.text()
            snap = parse_prometheus(text, time.time())
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeError) as exc:
            if len(self.errors) < 20:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            return None
        self.snapshots.append(snap)
        return snap

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        await self.scrape()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.scrape()

    async def stop(self) -> dict[str, Any]:
        """Take the last scrape and return the summary."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self.scrape()
            await self._session.close()
            self._session = None
        return summarize_snapshots(self.snapshots, self.names, self.url, self.errors)


def summarize_snapshots(snaps: list[Snapshot], names: MetricNames, url: str = "",
                        errors: list[str] | None = None) -> dict[str, Any]:
    """Counter increases, gauge statistics and the derived figures of a run's scrapes."""
    out: dict[str, Any] = {"url": url, "scrapes": len(snaps), "errors": errors or [],
                           "names": asdict(names)}
    if len(snaps) < 2:
        out["derived"] = {}
        return out
    first, last = snaps[0], snaps[-1]
    out["counters_delta"] = {k: last.values[k] - first.values.get(k, 0.0)
                             for k in sorted(last.counters)}
    gauges: dict[str, dict[str, float]] = {}
    for key in sorted(set().union(*(s.values.keys() - s.counters for s in snaps))):
        series = [s.values[key] for s in snaps if key in s.values]
        gauges[key] = {"min": min(series), "mean": sum(series) / len(series),
                       "max": max(series), "last": series[-1]}
    out["gauges"] = gauges

    def delta(name: str) -> float | None:
        if name not in last.by_name:
            return None
        return last.by_name[name] - first.by_name.get(name, 0.0)

    hits, queries = delta(names.prefix_hit_tokens), delta(names.prefix_query_tokens)
    depth = [s.by_name[names.queue_depth] for s in snaps if names.queue_depth in s.by_name]
    out["derived"] = {
        "prefix_hit_rate": hits / queries if hits is not None and queries else None,
        "kv_bytes_moved": delta(names.kv_bytes_moved),
        "queue_depth_mean": sum(depth) / len(depth) if depth else None,
        "queue_depth_max": max(depth) if depth else None,
    }
    return out
