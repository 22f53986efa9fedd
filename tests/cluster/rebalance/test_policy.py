"""The rebalancing policy on readings: when it switches, which worker, and when it will not
(hysteresis, sustain, cooldown, dwell, pool minimums); bad settings named."""
from __future__ import annotations

import pytest

from cluster.config import ConfigError, load_config
from cluster.rebalance.config import RebalanceConfig
from cluster.rebalance.policy import Reading, RebalancePolicy

T0 = 1_000_000.0    # wall clock of the readings


def policy(**cfg) -> RebalancePolicy:
    base = dict(enabled=True, sustain=2, cooldown_s=10.0, min_dwell_s=30.0)
    return RebalancePolicy(RebalanceConfig(**{**base, **cfg}), ttft_ms=100.0, tpot_ms=20.0, started=T0)


def fleet(queued: int = 0, step_ms: float = 5.0, kv: float = 0.1, since: float = T0 - 100,
          waiting: int = 0) -> list[Reading]:
    """One prefill worker (10,000 tokens/s) and two decode workers."""
    return [Reading("p0", "prefill", since, queued, 10_000.0),
            Reading("d0", "decode", since, step_ms=step_ms, running=8, kv_use=kv, waiting=waiting),
            Reading("d1", "decode", since, step_ms=step_ms, running=2, kv_use=kv)]


def test_a_prefill_queue_over_the_ttft_objective_moves_the_least_busy_decode_worker():
    pol = policy()
    # 2,000 queued tokens at 10,000 tokens/s: 200 ms of queue against a 100 ms objective.
    assert pol.decide(fleet(queued=2000), T0) is None                   # one reading: not sustained
    d = pol.decide(fleet(queued=2000), T0 + 1)
    assert (d.worker, d.from_role, d.to_role) == ("d1", "decode", "prefill")
    assert d.pressure.prefill == pytest.approx(2.0) and d.pressure.prefill_queue_s == pytest.approx(0.2)
    assert "prefill pressure 2.00" in d.reason and list(pol.history) == [d]


def test_the_router_admission_queue_counts_as_prefill_queue():
    pol = policy(sustain=1)
    d = pol.decide(fleet(queued=0), T0, router_queued_tokens=3000)
    assert d is not None and d.to_role == "prefill" and d.pressure.prefill_queue_s == pytest.approx(0.3)


def test_slow_decode_steps_or_full_kv_move_a_prefill_worker_when_prefill_is_calm():
    pol = policy(sustain=1)
    readings = fleet(step_ms=30.0) + [Reading("p1", "prefill", T0 - 100, 0, 10_000.0)]
    d = pol.decide(readings, T0)
    assert (d.from_role, d.to_role) == ("prefill", "decode") and d.pressure.decode == pytest.approx(1.5)
    pol = policy(sustain=1)
    d = pol.decide(fleet(kv=0.95, waiting=3) + [Reading("p1", "prefill", T0 - 100, 50, 10_000.0)], T0)
    assert (d.worker, d.to_role) == ("p0", "decode")     # the one with the least queued
    assert d.pressure.decode_kv_use == pytest.approx(0.95)


def test_a_full_kv_pool_with_nothing_waiting_for_it_is_no_decode_pressure():
    # Long sequences fill the decode workers' KV while prompts queue: prefill is what is short.
    pol = policy(sustain=1)
    d = pol.decide(fleet(queued=3000, kv=0.95), T0)
    assert d is not None and d.to_role == "prefill" and d.pressure.decode < 0.5


def test_between_the_thresholds_nothing_moves_and_the_streak_restarts():
    pol = policy()
    pol.decide(fleet(queued=2000), T0)
    # prefill pressure 0.7: between low (0.5) and high (1.0): the hysteresis band
    assert pol.decide(fleet(queued=700), T0 + 1) is None
    assert pol.decide(fleet(queued=2000), T0 + 2) is None                # a new streak of one
    assert pol.decide(fleet(queued=2000), T0 + 3) is not None


def test_both_pools_pressed_moves_nothing():
    pol = policy(sustain=1)
    assert pol.decide(fleet(queued=5000, step_ms=50.0), T0) is None


def test_no_switch_within_the_cooldown_of_the_last_one_nor_of_another_routers():
    pol = policy(sustain=1, cooldown_s=10.0, min_dwell_s=0.0)
    readings = fleet(queued=2000) + [Reading("d2", "decode", T0 - 100)]
    assert pol.decide(readings, T0) is not None
    assert pol.decide(readings, T0 + 5) is None
    assert pol.decide(readings, T0 + 11) is not None
    # Another router switched d2 3 s ago (its report says so): this policy waits too.
    other = policy(sustain=1, cooldown_s=10.0, min_dwell_s=0.0)
    seen = fleet(queued=2000) + [Reading("d2", "prefill", T0 + 97)]
    assert other.decide(seen, T0 + 100) is None
    assert other.decide(seen, T0 + 108) is not None


def test_a_worker_within_its_dwell_time_stays_and_a_pool_keeps_its_minimum():
    pol = policy(sustain=1, min_dwell_s=30.0)
    assert pol.decide(fleet(queued=2000, since=T0 - 10), T0) is None     # both decode workers too fresh
    pol = policy(sustain=1, min_decode=2)
    assert pol.decide(fleet(queued=2000), T0) is None                   # two decode workers, two needed
    pol = policy(sustain=1)
    only_one = [r for r in fleet(step_ms=50.0) if r.worker != "d1"]
    assert pol.decide(only_one, T0) is None                             # one prefill worker: the minimum


def test_no_measured_prefill_speed_is_no_prefill_pressure():
    pol = policy(sustain=1)
    readings = [Reading("p0", "prefill", T0 - 100, 5000, 0.0), Reading("d0", "decode", T0 - 100),
                Reading("d1", "decode", T0 - 100)]
    assert pol.decide(readings, T0) is None and pol.last.prefill == 0.0


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match=r"rebalance\.low: must be < rebalance\.high"):
        load_config(None, ["rebalance.low=1.5"])
    with pytest.raises(ConfigError, match=r"rebalance\.enabled: needs mode: disaggregated"):
        load_config(None, ["rebalance.enabled=true", "mode=colocated", "pools.decode.workers=3"])
    with pytest.raises(ConfigError, match=r"rebalance\.enabled: needs a worker to move"):
        load_config(None, ["rebalance.enabled=true"])
    with pytest.raises(ConfigError, match=r"rebalance\.enabled: needs both pools' workers alike"):
        load_config(None, ["rebalance.enabled=true", "pools.decode.workers=2", "pools.decode.cpus_per_worker=2"])
    with pytest.raises(ConfigError, match=r"rebalance\.sustain"):
        load_config(None, ["rebalance.sustain=0"])
    with pytest.raises(ConfigError, match=r"rebalance\.kv_high: must be <= 1"):
        load_config(None, ["rebalance.kv_high=1.5"])
    with pytest.raises(ValueError, match="objectives"):
        RebalancePolicy(RebalanceConfig(), ttft_ms=0.0, tpot_ms=20.0)
