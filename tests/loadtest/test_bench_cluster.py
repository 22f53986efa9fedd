"""Short real runs against the whole disaggregated cluster (Ray prefill and decode pools
behind the router), over gRPC and over the router's OpenAI-compatible HTTP API: every report
file is written, each request names both workers, and the cluster's own metrics agree."""
from __future__ import annotations

import asyncio
import json

import pytest

from cluster.config import load_config
from cluster.testing import BackgroundCluster
from loadtest.arrivals import PoissonArrivals
from loadtest.bench import BenchConfig, run_benchmark
from loadtest.distributions import parse_length
from loadtest.metrics import SLO
from loadtest.runner import RunLimits
from loadtest.synthetic import SyntheticWorkload
from loadtest.targets.base import TargetOptions

# Admission off: these runs count every request they send, and SLO admission may rightly
# refuse some on a loaded host, which is not what they test (tests/router does). Prefill
# overflow off: they check that each request names a worker of each pool.
OVERRIDES = ["mode=disaggregated", "router.grpc_port=0", "router.http_port=0",
             "router.metrics_port=0", "router.admission.enabled=false",
             "pools.prefill.cpus_per_worker=0.25", "pools.decode.cpus_per_worker=0.25",
             "pools.decode.workers=2", "model.num_threads=1", "router.health_poll_s=0.2",
             "model.max_num_seqs=32", "router.prefill_overflow=false"]


@pytest.fixture(scope="module")
def cluster():
    with BackgroundCluster(load_config(None, OVERRIDES)) as c:
        yield c


@pytest.mark.slow
def test_a_run_against_the_disaggregated_cluster_writes_every_report_file(cluster, tmp_path):
    cfg = BenchConfig(f"tandem://{cluster.target}", limits=RunLimits(max_requests=12),
                      quiet=True)
    workload = SyntheticWorkload(parse_length("uniform:16,96"), parse_length("fixed:8"),
                                 arrival=PoissonArrivals(8.0), shared_prefix=32)
    report = asyncio.run(run_benchmark(cfg, workload, tmp_path))
    for name in ("result.json", "requests.csv", "requests.jsonl", "latency_cdf.png"):
        assert (tmp_path / name).is_file(), name
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["figures"]["counts"]["by_status"] == {"ok": 12}
    assert result["target"]["details"]["model_info"]["mode"] == "disaggregated"
    for r in report.records:
        assert r.prefill_worker.startswith("tandem-prefill") and r.decode_worker.startswith(
            "tandem-decode") and r.completion_tokens == 8
    assert sum(result["figures"]["workers"]["decode"].values()) == 12


@pytest.mark.slow
def test_a_run_over_http_writes_every_report_file_and_scrapes_the_metrics(cluster, tmp_path):
    """The OpenAI target against the router's real HTTP front door; KV bytes move only
    between pools, so this runs on the disaggregated cluster."""
    url = f"http://127.0.0.1:{cluster.cluster.server.http_port}"
    metrics_url = f"http://127.0.0.1:{cluster.cluster.server.metrics_port}/metrics"
    cfg = BenchConfig(url, TargetOptions(request_timeout_s=30),
                      RunLimits(max_requests=10, max_duration_s=30), SLO(2000, 500),
                      metrics_url=metrics_url, metrics_interval_s=0.2, quiet=True)
    workload = SyntheticWorkload(parse_length("uniform:16,48"), parse_length("fixed:6"),
                                 arrival=PoissonArrivals(20.0), shared_prefix=16)
    report = asyncio.run(run_benchmark(cfg, workload, tmp_path))
    for name in ("result.json", "requests.csv", "requests.jsonl", "latency_cdf.png"):
        assert (tmp_path / name).is_file(), name
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["figures"]["counts"]["by_status"] == {"ok": 10}
    assert result["config"]["target"]["kind"] == "openai"
    # The vocabulary and context length come from the router's /v1/models (not options).
    assert result["target"]["vocab_size"] == 512 and result["target"]["model"] == "stories260K"
    for r in report.records:
        assert r.completion_tokens == 6 and r.prompt_tokens == r.sent_prompt_tokens
        assert r.finish_reason == "length" and 0 < r.ttft_ms <= r.e2e_ms
        assert len(r.itl_ms) == 5             # one SSE chunk per token
        assert len(r.output_token_ids) == 6   # the router streams the token ids
    derived = result["cluster_metrics"]["derived"]
    assert result["cluster_metrics"]["errors"] == []
    assert derived["kv_bytes_moved"] > 0
    tokens = result["figures"]["tokens"]
    # the server's counters and the per-request usage tell the same hit rate
    assert derived["prefix_hit_rate"] == pytest.approx(tokens["prefix_hit_rate"])
    assert tokens["cached_prompt"] > 0        # the 16-token shared prefix
