"""Rate sweeps: grid and bisection find the highest rate meeting the SLOs and stop on
over-saturation. The step function stands for a server whose capacity is 10 req/s."""
from __future__ import annotations

import asyncio

import pytest

from loadtest.errors import SpecError
from loadtest.sweep import SweepPolicy, judge, run_sweep, saturation_reasons

CAPACITY = 10.0


def figures(rate: float, attainment: float, failed: int = 0, total: int = 100,
            sustained: float | None = None) -> dict:
    return {"counts": {"total": total, "failed": failed},
            "throughput": {"completed_rps": rate, "send_rate_rps": rate,
                           "sustained_rps": rate if sustained is None else sustained},
            "goodput": {"slo_attainment": attainment, "goodput_rps": rate * attainment},
            "latency_ms": {k: {"p50": 1.0, "p99": 2.0} for k in ("ttft", "tpot")}}


def server(rate: float) -> dict:
    """Meets the SLOs up to its capacity; beyond it attainment collapses and it lags."""
    if rate <= CAPACITY:
        return figures(rate, 1.0)
    return figures(rate, 0.3, sustained=CAPACITY)


def sweep(policy: SweepPolicy, respond=server, interrupt_at: float | None = None):
    tried: list[float] = []

    async def run_at(rate: float):
        tried.append(rate)
        return judge(rate, respond(rate), policy, interrupted=rate == interrupt_at)

    return asyncio.run(run_sweep(policy, run_at)), tried


def test_grid_stops_at_the_first_failing_rate():
    result, tried = sweep(SweepPolicy(mode="grid", rates=[16, 2, 4, 8, 32]))
    assert tried == [2, 4, 8, 16]                 # sorted; 32 never run
    assert result["stop_reason"] == "saturated"
    assert result["max_rate_meeting_slo"] == 8 and result["first_failing_rate"] == 16
    assert result["goodput_at_max_rate"] == 8.0


def test_grid_patience_runs_more_steps_after_a_failure():
    _, tried = sweep(SweepPolicy(mode="grid", rates=[4, 8, 16, 32, 64], patience=1))
    assert tried == [4, 8, 16, 32]


def test_bisection_converges_on_the_capacity_within_tolerance():
    result, tried = sweep(SweepPolicy(mode="bisect", low=1, high=100, tolerance=0.05,
                                      max_steps=20))
    assert tried[:5] == [1, 2, 4, 8, 16]
    assert result["stop_reason"] == "converged"
    best = result["max_rate_meeting_slo"]
    assert best <= CAPACITY and (result["first_failing_rate"] - best) / best <= 0.05
    assert best > CAPACITY * 0.95


def test_bisection_is_bounded_by_max_steps():
    result, tried = sweep(SweepPolicy(mode="bisect", low=1, high=100, tolerance=1e-6,
                                      max_steps=7))
    assert len(tried) == 7 and result["stop_reason"] == "max_steps"


def test_bisection_reports_when_even_low_fails_or_high_passes():
    result, tried = sweep(SweepPolicy(mode="bisect", low=20, high=40))
    assert tried == [20] and result["max_rate_meeting_slo"] is None
    assert result["stop_reason"] == "low_fails"
    result, tried = sweep(SweepPolicy(mode="bisect", low=1, high=6))
    assert tried == [1, 2, 4, 6] and result["stop_reason"] == "high_passes"


def test_an_interrupted_step_ends_the_sweep_and_does_not_count_as_passing():
    result, tried = sweep(SweepPolicy(mode="grid", rates=[1, 2, 4]), interrupt_at=2)
    assert tried == [1, 2] and result["stop_reason"] == "interrupted"
    assert result["max_rate_meeting_slo"] == 1


def test_saturation_is_failures_or_a_lagging_sustained_rate():
    policy = SweepPolicy(mode="grid", rates=[1], max_failure_fraction=0.05,
                         min_throughput_ratio=0.8)
    assert saturation_reasons(figures(10, 1.0), 10, policy) == []
    assert "failures 6/100" in saturation_reasons(figures(10, 0.9, failed=6), 10, policy)[0]
    assert "sustained 7" in saturation_reasons(figures(10, 1.0, sustained=7), 10, policy)[0]
    # a replay whose opening rows are sparse: judged against the rate actually sent
    sparse = figures(10, 1.0, sustained=1.9)
    sparse["throughput"]["send_rate_rps"] = 2.0
    assert saturation_reasons(sparse, 10, policy) == []
    # high attainment but saturated still fails the step
    assert not judge(10, figures(10, 1.0, failed=10), policy).passed


def test_bad_policies_are_refused():
    for kwargs in ({"mode": "grid"}, {"mode": "grid", "rates": [0]},
                   {"mode": "bisect", "low": 5, "high": 5}, {"mode": "spiral"},
                   {"mode": "grid", "rates": [1], "attainment_target": 1.5}):
        with pytest.raises(SpecError):
            SweepPolicy(**kwargs)
