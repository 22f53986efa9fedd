"""The simulator against costs worked out by hand: one request, queueing, batching, chunked
prefill; and what must hold of any run (every request ends, load only hurts)."""
from __future__ import annotations

import numpy as np
import pytest

from cluster.planner.profile import DecodeCost, HandoffCost, Limits, Overhead, PrefillCost, Profile
from cluster.planner.simulator import Layout, Workload, max_goodput, simulate


def profile(**limits) -> Profile:
    return Profile("test", "test", "manual", kv_bytes_per_token=1000,
                   prefill=PrefillCost(base_ms=2.0, ms_per_token=0.1, ms_per_token2=0.0),
                   decode=DecodeCost(base_ms=5.0, ms_per_seq=1.0, ms_per_ctx_token=0.01),
                   handoff=HandoffCost(base_ms=3.0, gb_per_s=1.0), limits=Limits(**limits))


def one(prompt: int, output: int, at: float = 0.0) -> Workload:
    return Workload(np.array([at]), np.array([prompt]), np.array([output]))


def steps_ms(b: int, ctx0: int, k: int, prof: Profile) -> float:
    """k decode steps of a batch of b whose context starts at ctx0 in all."""
    return sum(prof.decode.ms(b, ctx0 + b * i) for i in range(k))


def test_one_disaggregated_request_costs_its_prefill_then_hand_off_and_steps():
    prof = profile()
    res = simulate(prof, Layout("disaggregated", 1, 1), one(100, 5))
    assert res.ttft_ms[0] == pytest.approx(2.0 + 0.1 * 100)
    handoff = 3.0 + 100 * 1000 / 1e6
    # 4 more tokens: 4 steps over one sequence of context 101, 102, ...
    assert res.tpot_ms[0] == pytest.approx((handoff + steps_ms(1, 101, 4, prof)) / 4)


def test_one_colocated_request_is_computed_in_chunks_then_decoded():
    prof = profile()
    res = simulate(prof, Layout("colocated", 0, 1, chunk_tokens=40), one(100, 3))
    # 100 prompt tokens in chunks of 40, 40, 20 (no batch yet: a prefill base each step).
    assert res.ttft_ms[0] == pytest.approx(3 * 2.0 + 0.1 * 100)
    assert res.tpot_ms[0] == pytest.approx(steps_ms(1, 101, 2, prof) / 2)


def test_serving_overhead_delays_first_tokens_and_stretches_every_step():
    base = profile()
    slow = profile()
    slow.overhead = Overhead(ttft_ms=7.0, step_factor=2.0)
    plain = simulate(base, Layout("disaggregated", 1, 1), one(100, 5))
    served = simulate(slow, Layout("disaggregated", 1, 1), one(100, 5))
    assert served.ttft_ms[0] == pytest.approx(2 * plain.ttft_ms[0] + 7.0)     # the prefill runs 2x too
    handoff = 3.0 + 0.1
    assert served.tpot_ms[0] == pytest.approx((handoff + 2 * steps_ms(1, 101, 4, base)) / 4)


def test_two_prompts_at_once_on_one_prefill_worker_queue():
    prof = profile()
    w = Workload(np.array([0.0, 0.0]), np.array([100, 100]), np.array([1, 1]))
    assert list(simulate(prof, Layout("disaggregated", 1, 1), w).ttft_ms) == pytest.approx([12.0, 24.0])
    assert list(simulate(prof, Layout("disaggregated", 2, 1), w).ttft_ms) == pytest.approx([12.0, 12.0])


def test_sequences_that_join_together_share_steps():
    prof = profile()
    w = Workload(np.array([0.0, 0.0]), np.array([100, 100]), np.array([3, 3]))
    res = simulate(prof, Layout("disaggregated", 2, 1), w)
    handoff = 3.0 + 0.1
    assert list(res.tpot_ms) == pytest.approx([(handoff + steps_ms(2, 202, 2, prof)) / 2] * 2)


def test_a_full_batch_holds_the_next_sequence_back_until_one_finishes():
    prof = profile(max_batch=1)
    w = Workload(np.array([0.0, 0.0]), np.array([10, 10]), np.array([4, 4]))
    res = simulate(prof, Layout("disaggregated", 2, 1), w)
    first_end = res.end_s[0] if res.end_s[0] < res.end_s[1] else res.end_s[1]
    later = max(res.end_s)
    assert later - first_end == pytest.approx(steps_ms(1, 11, 3, prof) / 1e3)


@pytest.mark.parametrize("mode", ["disaggregated", "colocated"])
def test_every_request_ends_and_more_load_never_helps(mode):
    prof = profile()
    w = Workload.synthetic(400, rate=20, prompt=200, output=20, seed=3)
    layout = Layout(mode, 1, 2) if mode == "disaggregated" else Layout(mode, 0, 3, 256)
    light, heavy = simulate(prof, layout, w.with_rate(5)), simulate(prof, layout, w.with_rate(80))
    assert not np.isnan(light.end_s).any() and not np.isnan(heavy.end_s).any()
    assert np.percentile(heavy.ttft_ms, 90) >= np.percentile(light.ttft_ms, 90)
    assert light.attainment(100, 20) >= heavy.attainment(100, 20)
    g = max_goodput(prof, layout, w, ttft_ms=200, tpot_ms=30)
    assert simulate(prof, layout, w.with_rate(g)).attainment(200, 30) >= 0.9
    assert simulate(prof, layout, w.with_rate(g * 1.5)).attainment(200, 30) < 0.9


def test_bad_layouts_and_workloads_are_refused():
    with pytest.raises(ValueError, match="mode"):
        Layout("mixed", 1, 1)
    with pytest.raises(ValueError, match="at least one worker"):
        Layout("disaggregated", 0, 1)
    with pytest.raises(ValueError, match="sorted"):
        Workload(np.array([1.0, 0.0]), np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(ValueError, match=">= 1"):
        Workload(np.array([0.0]), np.array([0]), np.array([1]))


def test_the_cpu_share_stretch_is_the_expected_share_of_shared_cores():
    from cluster.planner.simulator import cpu_share_stretch
    assert cpu_share_stretch([1.0, 1.0], 0, 0.0, 2) == 1.0                  # one core each
    assert cpu_share_stretch([1.0, 1.0, 1.0], 0, 0.0, 2) == pytest.approx(1.5)   # 3 busy on 2 cores
    # the other worker busy 40% of the time, the router a steady core: 1.0 or 1.5
    assert cpu_share_stretch([1.0, 0.4], 0, 1.0, 2) == pytest.approx(0.6 * 1.0 + 0.4 * 1.5)


def test_workers_sharing_too_few_cores_compute_slower_and_plenty_of_cores_change_nothing():
    prof = profile()
    w = Workload.synthetic(200, rate=20, prompt=200, output=40, seed=3)
    lay = Layout("colocated", 0, 3, 256)
    alone = simulate(prof, lay, w)
    roomy = simulate(prof, lay, w, host_cores=64)
    assert np.array_equal(alone.ttft_ms, roomy.ttft_ms) and np.allclose(alone.tpot_ms, roomy.tpot_ms, equal_nan=True)
    tight = simulate(prof, lay, w, host_cores=1)
    assert np.nanmedian(tight.tpot_ms) > 1.3 * np.nanmedian(alone.tpot_ms)
    prof.overhead.cpu_ms_per_token = 5.0         # a router busy a core and more on its own
    busier = simulate(prof, lay, w, host_cores=2)
    assert np.nanmedian(busier.tpot_ms) > np.nanmedian(simulate(profile(), lay, w, host_cores=2).tpot_ms)


def test_shared_cores_are_for_one_hosts_workers():
    with pytest.raises(ValueError, match="host_cores must be > 0"):
        simulate(profile(), Layout("colocated", 0, 2), one(10, 10), host_cores=0)
    with pytest.raises(ValueError, match="at most 64"):
        simulate(profile(), Layout("colocated", 0, 65), one(10, 10), host_cores=8)
