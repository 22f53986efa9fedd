"""A short real run against the whole disaggregated cluster: Ray prefill and decode pools
behind the router. Every report file is written and each request names both workers."""
from __future__ import annotations

import asyncio
import json

import pytest

from cluster.config import load_config
from cluster.testing import BackgroundCluster
from loadtest.arrivals import PoissonArrivals
from loadtest.bench import BenchConfig, run_benchmark
from loadtest.distributions import parse_length
from loadtest.runner import RunLimits
from loadtest.synthetic import SyntheticWorkload

OVERRIDES = ["mode=disaggregated", "router.grpc_port=0", "pools.prefill.cpus_per_worker=0.25",
             "pools.decode.cpus_per_worker=0.25", "pools.decode.workers=2",
             "model.num_threads=1", "router.health_poll_s=0.2", "model.max_num_seqs=32"]


@pytest.mark.slow
def test_a_run_against_the_disaggregated_cluster_writes_every_report_file(tmp_path):
    with BackgroundCluster(load_config(None, OVERRIDES)) as cluster:
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
