"""Fetch-vs-recompute controller: follows measured costs both ways."""
from __future__ import annotations

import pytest

from kv_transfer.store.base import FetchSample, TierHits
from kv_transfer.store.cost_model import CostModel

BPT = 1000  # bytes of KV per token


def model() -> CostModel:
    m = CostModel(BPT, safety=1.25)
    m.calibrate("local", FetchSample(100_000, 0.0001 + 0.00005), FetchSample(400_000, 0.0001 + 0.0002))
    m.calibrate("remote", FetchSample(100_000, 0.001 + 0.0005), FetchSample(400_000, 0.001 + 0.002))
    return m


def test_calibration_recovers_fixed_cost_and_bandwidth():
    snap = model().snapshot()
    assert snap["local"]["bytes_per_s"] == pytest.approx(2e9)
    assert snap["local"]["fixed_s"] == pytest.approx(1e-4)
    assert snap["remote"]["bytes_per_s"] == pytest.approx(2e8)
    assert snap["remote"]["fixed_s"] == pytest.approx(1e-3)


def test_slow_prefill_fetches_everything_fast_prefill_recomputes():
    m = model()
    hits = TierHits(local=0, remote=4096)
    slow = m.choose(hits, 4096, prefill_tokens_per_s=1_000)       # 4 s to recompute
    assert slow.fetch_tokens == 4096 and slow.est_saving_s > 0
    fast = m.choose(hits, 4096, prefill_tokens_per_s=10_000_000)  # 0.4 ms to recompute
    assert fast.fetch_tokens == 0 and fast.est_saving_s == 0


def test_dram_part_alone_can_be_the_best_choice():
    m = model()
    # DRAM costs 0.5 us/token, Redis 5 us/token, compute 2 us/token: fetch DRAM only.
    choice = m.choose(TierHits(local=2048, remote=2048), 4096, prefill_tokens_per_s=500_000)
    assert (choice.fetch_tokens, choice.fetch_local_tokens) == (2048, 2048)


def test_a_slow_observed_fetch_flips_the_decision_to_recompute():
    m = model()
    hits = TierHits(local=0, remote=1024)
    speed = 100_000   # recompute 10.2 ms; measured Redis fetch 6.1 ms (x1.25 safety)
    assert m.choose(hits, 1024, speed).fetch_tokens == 1024
    m.observe("remote", FetchSample(1_024_000, 1.0))   # Redis became slow: 1 MB in 1 s
    assert m.choose(hits, 1024, speed).fetch_tokens == 0
    for _ in range(40):                                 # and fast again
        m.observe("remote", FetchSample(1_024_000, 0.004))
    assert m.choose(hits, 1024, speed).fetch_tokens == 1024


def test_lookup_is_skipped_when_no_hit_could_win():
    m = model()
    assert m.best_case_wins(4096, 1_000)
    assert not m.best_case_wins(4096, 1e12)
    assert not m.best_case_wins(0, 1_000)


def test_hit_is_capped_at_the_usable_length():
    choice = model().choose(TierHits(local=0, remote=4096), 1024, prefill_tokens_per_s=1_000)
    assert choice.fetch_tokens == 1024


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError):
        CostModel(0)
    with pytest.raises(ValueError):
        model().choose(TierHits(0, 1), 1, 0)
    with pytest.raises(ValueError):
        model().observe("disk", FetchSample(1, 1.0))


def test_a_missing_tier_is_never_counted_on():
    m = model()
    assert m.best_case_wins(4096, 1_000_000)          # DRAM at 0.5 us/token would win
    m.mark_absent("local")
    assert not m.best_case_wins(4096, 1_000_000)      # Redis at 5 us/token cannot
    assert "local" not in m.snapshot()
