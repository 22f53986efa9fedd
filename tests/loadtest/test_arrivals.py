"""Arrival generators produce the requested rate and burstiness (fixed seeds)."""
from __future__ import annotations

import itertools
import numpy as np
import pytest

from loadtest.arrivals import ConstantArrivals, GammaArrivals, PoissonArrivals, arrival_stats, make_arrival
from loadtest.errors import SpecError
from loadtest.traces import load_trace

N = 20_000


def draw(process, seed: int = 7, n: int = N) -> list[float]:
    return list(itertools.islice(process.offsets(np.random.default_rng(seed)), n))


def test_poisson_has_the_requested_rate_and_unit_burstiness():
    stats = arrival_stats(draw(PoissonArrivals(5.0)))
    assert stats["mean_rps"] == pytest.approx(5.0, rel=0.03)
    assert stats["interarrival_cv"] == pytest.approx(1.0, abs=0.03)
    assert stats["dispersion"] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_has_the_requested_rate_and_coefficient_of_variation(cv):
    stats = arrival_stats(draw(GammaArrivals(5.0, cv), n=50_000))
    assert stats["mean_rps"] == pytest.approx(5.0, rel=0.05)
    assert stats["interarrival_cv"] == pytest.approx(cv, rel=0.08)


def test_bursty_gamma_piles_arrivals_into_windows_and_smooth_gamma_spreads_them():
    bursty = arrival_stats(draw(GammaArrivals(5.0, 3.0)))
    smooth = arrival_stats(draw(GammaArrivals(5.0, 0.5)))
    assert bursty["dispersion"] > 4.0
    assert smooth["dispersion"] < 0.6


def test_constant_arrivals_are_evenly_spaced():
    times = draw(ConstantArrivals(4.0), n=9)
    assert np.diff(times) == pytest.approx([0.25] * 8)
    assert times[0] == pytest.approx(0.25)


def test_same_seed_gives_the_same_arrivals_and_another_seed_does_not():
    assert draw(GammaArrivals(3.0, 2.0), seed=1, n=50) == draw(GammaArrivals(3.0, 2.0), seed=1, n=50)
    assert draw(PoissonArrivals(3.0), seed=1, n=50) != draw(PoissonArrivals(3.0), seed=2, n=50)


def test_make_arrival_builds_by_name_and_rejects_bad_input():
    assert isinstance(make_arrival("gamma", 2.0, 3.0), GammaArrivals)
    assert make_arrival("gamma", 2.0).cv == 1.0
    with pytest.raises(SpecError, match="cv applies to the gamma process only"):
        make_arrival("poisson", 2.0, 3.0)
    with pytest.raises(SpecError, match="unknown arrival process"):
        make_arrival("weibull", 2.0)
    for bad_rate in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(SpecError, match="positive"):
            PoissonArrivals(bad_rate)
    with pytest.raises(SpecError, match="cv"):
        GammaArrivals(1.0, 0.0)


def test_arrival_stats_of_the_shipped_azure_traces_match_the_published_summary():
    # interarrival_cv from the traces' stats.json (shared/traces), computed independently.
    expected = {"azure-conv": 1.0941699866843826, "azure-code": 13.151290973275087}
    for name, cv in expected.items():
        trace = load_trace(name)
        measured = arrival_stats([r.timestamp_s for r in trace.records])
        assert measured["interarrival_cv"] == pytest.approx(cv, rel=1e-3)
