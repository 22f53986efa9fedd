"""Real runs against an OpenAI-compatible HTTP endpoint (SSE), with metrics scraping."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest

from loadtest.arrivals import PoissonArrivals
from loadtest.bench import BenchConfig, run_benchmark
from loadtest.distributions import parse_length
from loadtest.errors import SpecError, TargetError
from loadtest.metrics import SLO
from loadtest.multiturn import MultiTurnWorkload
from loadtest.runner import RunLimits
from loadtest.synthetic import SyntheticWorkload
from loadtest.targets.base import TargetOptions, make_target


def options(**kw) -> TargetOptions:
    return TargetOptions(**{"request_timeout_s": 30, "vocab_size": 512, **kw})


def test_a_run_over_http_writes_every_report_file_and_scrapes_the_metrics(openai_front, tmp_path):
    cfg = BenchConfig(openai_front.url, options(), RunLimits(max_requests=10, max_duration_s=30),
                      SLO(2000, 500), metrics_url=f"{openai_front.url}/metrics",
                      metrics_interval_s=0.2, quiet=True)
    workload = SyntheticWorkload(parse_length("uniform:16,48"), parse_length("fixed:6"),
                                 arrival=PoissonArrivals(20.0), shared_prefix=16)
    report = asyncio.run(run_benchmark(cfg, workload, tmp_path))
    for name in ("result.json", "requests.csv", "requests.jsonl", "latency_cdf.png"):
        assert (tmp_path / name).is_file(), name
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["figures"]["counts"]["by_status"] == {"ok": 10}
    assert result["config"]["target"]["kind"] == "openai"
    for r in report.records:
        assert r.completion_tokens == 6 and r.prompt_tokens == r.sent_prompt_tokens
        assert r.finish_reason == "length" and 0 < r.ttft_ms <= r.e2e_ms
        assert len(r.itl_ms) == 5             # one SSE chunk per token
    derived = result["cluster_metrics"]["derived"]
    assert result["cluster_metrics"]["errors"] == []
    assert derived["kv_bytes_moved"] > 0
    tokens = result["figures"]["tokens"]
    # the server's counters and the per-request usage tell the same hit rate
    assert derived["prefix_hit_rate"] == pytest.approx(tokens["prefix_hit_rate"])
    assert tokens["cached_prompt"] > 0        # the 16-token shared prefix


def test_http_rejections_are_counted_by_status(openai_front, tmp_path):
    cfg = BenchConfig(openai_front.url, options(max_model_len=4096),
                      RunLimits(max_requests=3, max_duration_s=30), quiet=True, plots=False)
    workload = SyntheticWorkload(parse_length("fixed:1000"), parse_length("fixed:4"),
                                 concurrency=1)
    report = asyncio.run(run_benchmark(cfg, workload, tmp_path))
    assert report.result["figures"]["counts"]["by_status"] == {"invalid": 3}
    assert all(r.error.startswith("HTTP 400") for r in report.records)
    assert not (tmp_path / "latency_cdf.png").exists()      # plots were switched off


def test_multi_turn_over_http_uses_placeholder_answers_of_the_right_length(openai_front, tmp_path):
    cfg = BenchConfig(openai_front.url, options(), RunLimits(max_requests=20), quiet=True,
                      plots=False)
    workload = MultiTurnWorkload(turns=2, users=2, question_len=parse_length("fixed:8"),
                                 answer_len=parse_length("fixed:5"), system_prompt_len=16,
                                 concurrency=2)
    report = asyncio.run(run_benchmark(cfg, workload, tmp_path))
    assert len(report.records) == 4 and all(r.ok for r in report.records)
    assert report.result["config"]["workload"]["answers_as_placeholders"] == 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_endpoint_that_does_not_state_the_vocabulary_needs_vocab_size(openai_front):
    target = make_target(openai_front.url, TargetOptions())
    with pytest.raises(TargetError, match="--vocab-size"):
        asyncio.run(target.open())


def test_unreachable_targets_and_bad_urls_fail_before_any_load():
    for url in (f"http://127.0.0.1:{free_port()}", f"tandem://127.0.0.1:{free_port()}"):
        target = make_target(url, options(connect_timeout_s=1.0))
        with pytest.raises(TargetError):
            asyncio.run(_open_quickly(target))
    for url in ("ftp://x:1", "127.0.0.1:50051", "tandem://"):
        with pytest.raises(SpecError, match="scheme://host:port"):
            make_target(url)


async def _open_quickly(target):
    try:
        await target.open()
    finally:
        await target.close()
