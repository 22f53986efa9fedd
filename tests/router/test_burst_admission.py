"""A burst of 10x capacity against a running disaggregated cluster (real Ray pools, the
"llama-100m" preset so that prefill takes real time): the admitted requests meet the TTFT
objective, the rest are refused at once with RESOURCE_EXHAUSTED, and no worker crashes.

The burst comes from a separate client process (as real clients do), so the client's own
work does not share the router's interpreter."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from frontdoor_helpers import sample, scrape  # noqa: E402

from cluster.config import load_config  # noqa: E402
from cluster.testing import BackgroundCluster  # noqa: E402
from tandem_client import TandemClient  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TTFT_MS = 1000.0
PROMPT_TOKENS = 128
BURST_CLIENT = textwrap.dedent("""
    import asyncio, json, random, sys, time
    from tandem_client import AsyncTandemClient
    from tandem_client.errors import ResourceExhausted
    target, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(7)
    prompts = [[rng.randrange(3, 32000) for _ in range(size)] for _ in range(n)]

    async def main():
        async with AsyncTandemClient(target, timeout=120, retries=0) as client:
            await client.model_info()

            async def one(ids):
                start = time.perf_counter()
                try:
                    res = await client.generate(token_ids=ids, max_tokens=4)
                    return {"status": "ok", "ttft_ms": res.usage.ttft_ms}
                except ResourceExhausted as exc:
                    return {"status": "refused", "ms": 1000 * (time.perf_counter() - start),
                            "retry_after_ms": int(dict(exc.trailing_metadata)["retry-after-ms"])}
                except Exception as exc:
                    return {"status": f"{type(exc).__name__}: {exc}"}
            return await asyncio.gather(*(one(p) for p in prompts))
    print(json.dumps(asyncio.run(main())))
""")


def _cfg(*extra: str):
    return load_config(None, [
        "router.grpc_port=0", "router.metrics_port=0", "model.model=llama-100m",
        "model.num_kv_blocks=640", "model.max_num_seqs=16", "model.num_threads=1",
        "pools.prefill.cpus_per_worker=0.25", "pools.decode.cpus_per_worker=0.25",
        "store.enabled=false", "router.health_poll_s=0.2", f"slo.ttft_ms={TTFT_MS}",
        "slo.tpot_ms=1000",
        # Plan to 75% of the objective: on two shared cores the burst's own handling slows
        # prefill by a quarter or so while it arrives (docs/metrics.md).
        "router.admission.miss_margin=-0.25", *extra])


@pytest.fixture(scope="module")
def cluster():
    with BackgroundCluster(_cfg()) as c:
        yield c


def _prompt(i: int) -> list[int]:
    return [(i * 7919 + j * 104729) % 31990 + 5 for j in range(PROMPT_TOKENS)]


def _slowdown(target: str, before_ms: float) -> float:
    """How much slower than ``before_ms`` one request is served now (>= 1): admission plans
    with the speed it measured, and a host that other work slows down later serves admitted
    requests that much later. The bound scales by it, so the tests judge admission's
    decision, not the host's speed."""
    with TandemClient(target, timeout=120) as client:
        now = statistics.median(client.generate(token_ids=_prompt(500 + i), max_tokens=2).usage.ttft_ms
                                for i in range(3))
    return max(1.0, now / before_ms)


def _burst(cluster, n: int) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", BURST_CLIENT, cluster.target, str(n),
                           str(PROMPT_TOKENS)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["colocated", "disaggregated"])
def test_a_burst_on_a_fresh_cluster_admits_no_more_than_it_can_serve_in_time(mode):
    """Colocated workers report no prefill speed: until a first token has been measured one
    request per worker waits and the rest are refused (that one is admitted blind). Disaggregated
    prefill workers measure theirs at start, and admission lets in what that speed serves
    within the objective it plans to (75% of it), and refuses the rest at once.

    Only the decision is judged here: how fast the admitted requests are then served is the
    host's speed (a loaded fresh-clone run served 474-1065 ms against a 1 s objective after
    planning to 750 ms); the 10x-capacity test below checks the TTFT of what is admitted."""
    with BackgroundCluster(_cfg(f"mode={mode}")) as fresh:
        metrics = f"http://127.0.0.1:{fresh.cluster.server.metrics_port}/metrics"
        rate = sample(scrape(metrics), "tandem_worker_prefill_tokens_per_second")
        results = _burst(fresh, 24)
    admitted = [r for r in results if r["status"] == "ok"]
    refused = [r for r in results if r["status"] == "refused"]
    assert len(admitted) + len(refused) == 24, results
    assert len(admitted) >= 1 and len(refused) >= 12, admitted
    if mode == "colocated":
        assert len(admitted) == 1, admitted      # one decode (colocated) worker: one blind admit
    else:
        assert rate > 0                          # measured at start, read before the burst
        planned = max(1, int(0.75 * TTFT_MS / 1000 * rate / PROMPT_TOKENS))
        # First tokens that come back while the burst still arrives free queue room, and the
        # estimate then refits to what it observed: at most twice the plan, plus one.
        assert len(admitted) <= 2 * planned + 1, (rate, planned, len(admitted))


def test_a_burst_of_ten_times_capacity_is_admitted_within_the_ttft_objective_or_refused_at_once(
        cluster):
    server = cluster.cluster.server
    with TandemClient(cluster.target, timeout=120) as client:   # measured prefill speed
        singles = [client.generate(token_ids=_prompt(i), max_tokens=2).usage.ttft_ms
                   for i in range(4)]
    capacity = max(2, int(TTFT_MS // statistics.median(singles)))
    burst = 10 * capacity
    refused_before = sample(scrape(f"http://127.0.0.1:{server.metrics_port}/metrics"),
                            "tandem_admission_rejections_total")
    results = _burst(cluster, burst)
    admitted = [r for r in results if r["status"] == "ok"]
    refused = [r for r in results if r["status"] == "refused"]
    assert len(admitted) + len(refused) == burst, [r for r in results if "ms" not in r
                                                   and r["status"] != "ok"][:3]
    assert 1 <= len(admitted) <= 3 * capacity and len(refused) >= burst // 2
    slow = _slowdown(cluster.target, statistics.median(singles))
    met = sum(r["ttft_ms"] <= TTFT_MS * slow for r in admitted)
    assert met >= 0.9 * len(admitted), (slow, sorted(r["ttft_ms"] for r in admitted))
    assert all(r["retry_after_ms"] > 0 for r in refused)
    latencies = sorted(r["ms"] for r in refused)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    # The client saw "no" at once, not after waiting behind admitted work: well inside the
    # objective that admitted requests take up to. (A fixed 50 ms bound failed on a loaded
    # 2-core host at 56-59 ms once faster prefill doubled the measured capacity and the burst.)
    assert p99 < TTFT_MS / 4, latencies[-5:]
    metrics = scrape(f"http://127.0.0.1:{server.metrics_port}/metrics")
    assert sample(metrics, "tandem_admission_rejections_total") - refused_before == len(refused)
    info = cluster.call(cluster.backend.cluster_info())      # no worker crashed or restarted
    assert info.healthy
    assert all(w.health == "healthy" and w.restarts == 0 for p in info.pools for w in p.workers)
    with TandemClient(cluster.target, timeout=60) as client:
        assert client.generate(token_ids=_prompt(999), max_tokens=2).usage.completion_tokens == 2
