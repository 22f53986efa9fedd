"""Percentiles, SLO attainment and goodput, checked on hand-computed examples."""
from __future__ import annotations

import pytest

from loadtest.errors import SpecError
from loadtest.metrics import SLO, distribution, percentile, summarize
from loadtest.record import RequestRecord, Status


def test_percentile_interpolates_linearly_between_ranks():
    values = [15, 20, 35, 40, 50]
    assert percentile(values, 0) == 15 and percentile(values, 100) == 50
    assert percentile(values, 50) == 35
    assert percentile(values, 40) == pytest.approx(29.0)      # rank 1.6: 20 + 0.6 * 15
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)  # rank 2.7
    assert percentile([7], 99) == 7
    assert percentile([4, 1, 3, 2], 50) == 2.5                 # order does not matter


def test_percentile_refuses_no_values_and_out_of_range_q():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_distribution_skips_missing_values_and_handles_none_at_all():
    d = distribution([10.0, None, 30.0])
    assert d["count"] == 2 and d["mean"] == 20.0 and d["p50"] == 20.0 and d["max"] == 30.0
    empty = distribution([None])
    assert empty["count"] == 0 and empty["p99"] is None


def rec(i, status=Status.OK, ttft=100.0, e2e=1000.0, tokens=10, prompt=50, cached=0,
        prefill="p0", decode="d0", itl=()):
    return RequestRecord(index=i, status=status, ttft_ms=ttft, e2e_ms=e2e,
                         completion_tokens=tokens, prompt_tokens=prompt, sent_prompt_tokens=prompt,
                         cached_prompt_tokens=cached, prefill_worker=prefill,
                         decode_worker=decode, itl_ms=list(itl), send_s=float(i),
                         end_s=float(i) + e2e / 1000)


def test_tpot_is_decode_time_per_token_after_the_first():
    assert rec(0, ttft=100, e2e=1000, tokens=10).tpot_ms == pytest.approx(100.0)
    assert rec(0, tokens=1).tpot_ms is None


def test_slo_met_needs_ok_status_and_every_objective():
    slo = SLO(ttft_ms=200, tpot_ms=50)
    assert slo.met(rec(0, ttft=200, e2e=200 + 9 * 50))           # both exactly on the line
    assert not slo.met(rec(0, ttft=201, e2e=201 + 9 * 10))        # TTFT missed
    assert not slo.met(rec(0, ttft=100, e2e=100 + 9 * 51))        # TPOT missed
    assert slo.met(rec(0, ttft=100, e2e=5000, tokens=1))          # one token: no TPOT
    assert not slo.met(rec(0, status=Status.REFUSED))
    assert not SLO(200, 50, e2e_ms=300).met(rec(0, ttft=100, e2e=400))
    with pytest.raises(SpecError):
        SLO(ttft_ms=0)


def test_summary_counts_failures_against_attainment_and_goodput():
    slo = SLO(ttft_ms=200, tpot_ms=50)
    records = [
        rec(0, ttft=100, e2e=100 + 9 * 20, cached=25, itl=[20] * 9),     # good
        rec(1, ttft=150, e2e=150 + 9 * 40, cached=0, itl=[40] * 9),      # good
        rec(2, ttft=300, e2e=300 + 9 * 20, prefill="p1"),                # TTFT missed
        rec(3, ttft=100, e2e=100 + 9 * 80, decode="d1"),                 # TPOT missed
        rec(4, status=Status.REFUSED, ttft=None, e2e=3.0, tokens=0),     # refused
        rec(5, status=Status.TIMEOUT, ttft=None, e2e=60000.0, tokens=0), # timed out
    ]
    s = summarize(records, duration_s=4.0, slo=slo, offered_rps=1.5)
    assert s["counts"] == {"total": 6, "ok": 4, "failed": 2,
                           "by_status": {"ok": 4, "refused": 1, "timeout": 1}}
    g = s["goodput"]
    assert g["good_requests"] == 2
    assert g["goodput_rps"] == pytest.approx(2 / 4.0)
    assert g["slo_attainment"] == pytest.approx(2 / 6)
    assert g["ttft_attainment"] == pytest.approx(3 / 6)
    assert g["tpot_attainment"] == pytest.approx(3 / 6)
    lat = s["latency_ms"]
    assert lat["ttft"]["count"] == 4                        # ok requests only
    assert lat["ttft"]["p50"] == pytest.approx(125.0)       # of 100, 100, 150, 300
    assert lat["tpot"]["max"] == pytest.approx(80.0)
    assert lat["itl"]["count"] == 18 and lat["itl"]["mean"] == pytest.approx(30.0)
    t = s["throughput"]
    assert t["completed_rps"] == pytest.approx(1.0) and t["sent_rps"] == pytest.approx(1.5)
    assert t["output_tokens_per_s"] == pytest.approx(40 / 4.0)
    assert s["tokens"] == {"prompt": 200, "cached_prompt": 25, "completion": 40,
                           "prefix_hit_rate": pytest.approx(25 / 200)}
    assert s["workers"] == {"prefill": {"p0": 3, "p1": 1}, "decode": {"d0": 3, "d1": 1}}


def test_sustained_rate_leaves_out_the_drain_tail():
    # 4 ok requests sent at 0,1,2,3 s, each taking 0.5 s: window 3.5 s - median 0.5 s = 3 s
    records = [rec(i, ttft=100, e2e=500) for i in range(4)]
    throughput = summarize(records, 3.5, SLO())["throughput"]
    assert throughput["sustained_rps"] == pytest.approx(4 / 3)
    assert throughput["send_rate_rps"] == pytest.approx(1.0)     # 3 gaps in 3 s


def test_an_empty_run_summarises_to_zeros_not_errors():
    s = summarize([], duration_s=0.0, slo=SLO())
    assert s["counts"]["total"] == 0 and s["goodput"]["slo_attainment"] == 0.0
