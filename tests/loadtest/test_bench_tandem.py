"""Real runs against a real Tandem router (gRPC, stories260K engine): every report file,
the caps, and honest accounting of refused, invalid and cancelled requests."""
from __future__ import annotations

import asyncio
import csv
import json
import re
import threading
from contextlib import contextmanager

import pytest

from loadtest.arrivals import PoissonArrivals
from loadtest.bench import BenchConfig, run_benchmark
from loadtest.bench_sweep import format_sweep, run_rate_sweep
from loadtest.compare import compare, compare_files
from loadtest.distributions import parse_length
from loadtest.errors import ReportError
from loadtest.metrics import SLO
from loadtest.multiturn import MultiTurnWorkload
from loadtest.plots import cdf_label
from loadtest.replay import TraceTransform, TraceWorkload
from loadtest.runner import RunLimits
from loadtest.sweep import SweepPolicy
from loadtest.synthetic import SyntheticWorkload
from loadtest.targets.base import TargetOptions
from loadtest.traces import load_trace

from loadtest_routers import make_router

PNG = b"\x89PNG\r\n\x1a\n"


# Objectives no host misses: these runs check the accounting (attainment, goodput, sweep
# steps passing), not how fast a shared machine serves stories260K.
GENEROUS_SLO = SLO(ttft_ms=60_000, tpot_ms=60_000)


def config(url, **limits) -> BenchConfig:
    opts = limits.pop("options", TargetOptions(request_timeout_s=30))
    return BenchConfig(url, opts, RunLimits(**{"max_duration_s": 30, **limits}),
                       GENEROUS_SLO, quiet=True)


@contextmanager
def engine_stalled(router):
    """Fault injection: until the block ends, engine steps make no progress, so every request
    sent meanwhile gets no token, however fast the host. The engine thread still runs its
    commands between steps (adds, aborts, model and cluster info), as a slow engine would."""
    engine, release = router.backend.engine, threading.Event()
    step = engine.step

    def stalled_step():
        if release.wait(0.005):
            return step()
        return []
    engine.step = stalled_step
    try:
        yield
    finally:
        release.set()
        del engine.step                 # the class's own step again


def synthetic(inp="uniform:16,64", out="fixed:8", rate=20.0, concurrency=None, seed=0):
    return SyntheticWorkload(parse_length(inp), parse_length(out), seed=seed,
                             arrival=None if concurrency else PoissonArrivals(rate),
                             concurrency=concurrency)


def run(cfg, workload, out):
    return asyncio.run(run_benchmark(cfg, workload, out))


def max_overlap(records) -> int:
    events = sorted([(r.send_s, 1) for r in records] + [(r.end_s, -1) for r in records])
    depth = best = 0
    for _, step in events:
        depth += step
        best = max(best, depth)
    return best


@pytest.fixture(scope="module")
def first_run(tandem_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return run(config(tandem_url, max_requests=12), synthetic(), out), out


def test_an_open_loop_run_writes_every_report_file(first_run):
    report, out = first_run
    for name in ("result.json", "requests.csv", "requests.jsonl", "latency_cdf.png"):
        assert (out / name).is_file(), name
    assert (out / "latency_cdf.png").read_bytes()[:8] == PNG
    result = json.loads((out / "result.json").read_text())
    assert result["outcome"]["stop_reason"] == "max_requests"
    assert not result["outcome"]["interrupted"]
    assert result["figures"]["counts"] == {"total": 12, "ok": 12, "failed": 0,
                                           "by_status": {"ok": 12}}
    assert result["target"]["vocab_size"] == 512 and result["target"]["model"] == "stories260K"
    assert result["environment"]["python"] and result["config"]["workload"]["name"] == "synthetic"
    assert result["figures"]["goodput"]["slo_attainment"] == 1.0
    assert set(result["files"]) == {"requests_csv", "requests_jsonl", "latency_cdf_png",
                                    "result_json"}
    rows = list(csv.DictReader(open(out / "requests.csv")))
    lines = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == len(lines) == 12


def test_each_request_is_measured_in_full(first_run):
    report, _ = first_run
    for r in report.records:
        assert r.ok and r.completion_tokens == 8 and r.finish_reason == "length"
        assert r.prompt_tokens == r.sent_prompt_tokens and 16 <= r.prompt_tokens <= 64
        assert 0 < r.ttft_ms <= r.e2e_ms and r.server_ttft_ms is not None
        assert 1 <= len(r.itl_ms) <= 7 and all(g >= 0 for g in r.itl_ms)
        assert r.prefill_worker == r.decode_worker == "local-0"
        assert r.output_token_ids and len(r.output_token_ids) == 8
    assert [r.index for r in report.records] == list(range(12))


def test_closed_loop_never_exceeds_its_concurrency(tandem_url, tmp_path):
    report = run(config(tandem_url, max_requests=9), synthetic(concurrency=3), tmp_path)
    assert len(report.records) == 9 and all(r.ok for r in report.records)
    assert max_overlap(report.records) <= 3


def test_the_duration_cap_stops_sending(tandem_url, tmp_path):
    cfg = config(tandem_url, max_requests=10_000, max_duration_s=1.0)
    report = run(cfg, synthetic(rate=10.0), tmp_path)
    assert report.result["outcome"]["stop_reason"] == "max_duration"
    assert 0 < len(report.records) < 10_000
    assert all(r.send_s < 1.0 for r in report.records)
    assert all(r.status.value != "in_flight" for r in report.records)


def test_requests_still_in_flight_at_the_drain_deadline_are_cancelled_and_counted(
        router, tandem_url, tmp_path):
    cfg = config(tandem_url, max_requests=4, max_duration_s=0.3, drain_timeout_s=0.0)
    with engine_stalled(router):       # none of the 4 can finish before the deadline
        report = run(cfg, synthetic(inp="fixed:16", out="fixed:400", concurrency=4), tmp_path)
    counts = report.result["figures"]["counts"]
    assert report.result["outcome"]["stop_reason"] == "drain_timeout"
    assert counts["by_status"].get("cancelled", 0) == counts["total"] == 4
    assert report.result["figures"]["goodput"]["slo_attainment"] == 0.0


def test_prompts_longer_than_the_context_are_counted_invalid_and_against_goodput(tandem_url,
                                                                                tmp_path):
    # Claim a longer context than the model has: the router rejects every prompt.
    cfg = config(tandem_url, max_requests=5,
                 options=TargetOptions(request_timeout_s=30, max_model_len=4096))
    report = run(cfg, synthetic(inp="fixed:1000", out="fixed:4", concurrency=2), tmp_path)
    figures = report.result["figures"]
    assert figures["counts"]["by_status"] == {"invalid": 5}
    assert figures["goodput"]["goodput_rps"] == 0 and figures["goodput"]["slo_attainment"] == 0
    assert all("INVALID_ARGUMENT" in r.error for r in report.records)


def test_refused_admissions_are_reported_by_status(tmp_path):
    with make_router(max_inflight=1) as small:
        cfg = config(f"tandem://{small.target}", max_requests=12)
        report = run(cfg, synthetic(inp="fixed:16", out="fixed:64", concurrency=4), tmp_path)
    by_status = report.result["figures"]["counts"]["by_status"]
    assert by_status.get("refused", 0) > 0 and by_status.get("ok", 0) > 0
    assert sum(by_status.values()) == 12
    assert report.result["figures"]["goodput"]["good_requests"] == by_status["ok"]
    label = cdf_label("run", report.records, by_status["ok"])   # the CDFs say what they omit
    assert label == f"run (n={by_status['ok']}; not shown: {by_status['refused']} refused)"


def test_a_mooncake_replay_reuses_prefixes_on_the_server(tandem_url, tmp_path):
    trace = load_trace("mooncake-conv", limit=30)
    workload = TraceWorkload(trace, TraceTransform(rate=40.0, block_tokens=16, max_output=16))
    report = run(config(tandem_url, max_requests=30), workload, tmp_path)
    result = report.result
    assert result["figures"]["counts"]["ok"] == 30
    assert result["figures"]["tokens"]["cached_prompt"] > 0
    transformation = result["config"]["workload"]["transformation"]
    assert transformation["block_tokens"] == 16 and transformation["rows_sent"] == 30
    assert result["config"]["workload"]["licence"].endswith("LICENSE.Mooncake.Apache-2.0.txt")


def test_multi_turn_conversations_reuse_their_own_history(tandem_url, tmp_path):
    workload = MultiTurnWorkload(turns=3, users=3, question_len=parse_length("fixed:12"),
                                 answer_len=parse_length("fixed:6"), system_prompt_len=32,
                                 user_context_len=16, concurrency=3, seed=11)
    report = run(config(tandem_url, max_requests=50), workload, tmp_path)
    assert report.result["outcome"]["stop_reason"] == "workload_done"
    assert len(report.records) == 9 and all(r.ok for r in report.records)
    later = [r for r in report.records if r.turn > 0]
    assert all(r.cached_prompt_tokens >= 32 for r in later)
    assert report.result["config"]["workload"]["answers_from_server_tokens"] == 9


def test_a_grid_sweep_writes_its_summary_plots_and_one_run_per_rate(tandem_url, tmp_path):
    policy = SweepPolicy(mode="grid", rates=[4.0, 8.0], min_throughput_ratio=0.0)
    result = asyncio.run(run_rate_sweep(config(tandem_url, max_requests=6),
                                        synthetic(), policy, tmp_path))
    for name in ("sweep.json", "slo_attainment_vs_rate.png", "goodput_vs_rate.png",
                 "latency_cdf.png"):
        assert (tmp_path / name).is_file(), name
    steps = result["sweep"]["steps"]
    assert [s["rate"] for s in steps] == [4.0, 8.0] and all(s["passed"] for s in steps)
    assert result["sweep"]["max_rate_meeting_slo"] == 8.0
    assert all((tmp_path / f"rate_{r:g}" / "result.json").is_file() for r in (4, 8))
    text = format_sweep(result)
    assert "max rate meeting SLO: 8 req/s" in text and not re.search(r"\d\.\d{4,}", text), text


def test_compare_puts_two_runs_side_by_side_with_ratios(first_run, tandem_url, tmp_path):
    _, out_a = first_run
    run(config(tandem_url, max_requests=6), synthetic(seed=3), tmp_path)
    text = compare_files(str(out_a / "result.json"), str(tmp_path / "result.json"))
    assert "goodput.goodput_rps" in text and "latency_ms.ttft.p99" in text
    a = json.loads((out_a / "result.json").read_text())
    b = json.loads((tmp_path / "result.json").read_text())
    rows = {r.metric: r for r in compare(a, b)}
    assert rows["counts.total"].a == 12 and rows["counts.total"].b == 6
    assert rows["counts.total"].ratio == pytest.approx(0.5)


def test_compare_warns_when_the_runs_saw_different_prefix_hit_rates(first_run, tmp_path):
    _, out = first_run
    result = json.loads((out / "result.json").read_text())
    cold = json.loads(json.dumps(result))
    result["figures"]["tokens"]["prefix_hit_rate"] = 0.98
    cold["figures"]["tokens"]["prefix_hit_rate"] = 0.02
    (tmp_path / "warm.json").write_text(json.dumps(result))
    (tmp_path / "cold.json").write_text(json.dumps(cold))
    text = compare_files(str(tmp_path / "warm.json"), str(tmp_path / "cold.json"))
    assert "WARNING: prefix hit rates differ (a 98.0%, b 2.0%)" in text
    same = compare_files(str(tmp_path / "warm.json"), str(tmp_path / "warm.json"))
    assert "WARNING" not in same


def test_compare_refuses_other_files_and_mixed_kinds(first_run, tmp_path):
    _, out = first_run
    with pytest.raises(ReportError, match="not JSON"):
        compare_files(str(out / "requests.jsonl"), str(out / "result.json"))
    other = tmp_path / "other.json"
    other.write_text('{"figures": {}}')
    with pytest.raises(ReportError, match="not a tandem bench result"):
        compare_files(str(out / "result.json"), str(other))
    result = json.loads((out / "result.json").read_text())
    with pytest.raises(ReportError, match="cannot compare"):
        compare(result, dict(result, kind="sweep"))


def test_slow_requests_time_out_and_the_harness_cap_is_never_exceeded(router, tandem_url,
                                                                      tmp_path):
    cfg = config(tandem_url, max_requests=6, request_timeout_s=0.3, max_inflight=2,
                 options=TargetOptions(request_timeout_s=0.3))
    with engine_stalled(router):       # every request sent is slow: none gets a token in 0.3 s
        report = run(cfg, synthetic(inp="fixed:16", out="fixed:400", rate=200.0), tmp_path)
    by_status = report.result["figures"]["counts"]["by_status"]
    assert sum(by_status.values()) == 6
    assert by_status.get("timeout", 0) >= 1 and by_status.get("client_overload", 0) >= 1
    sent = [r for r in report.records if r.status.value != "client_overload"]
    assert max_overlap(sent) <= 2
    assert all(r.error for r in report.records)
