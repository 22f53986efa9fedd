"""``tandem profile`` on the real engine: a profile that loads back, with the model's KV size,
the engine's limits, and a point for every length and batch it measured."""
from __future__ import annotations

import json

import pytest

from cluster.planner.measure import measure
from cluster.planner.profile import Profile


def test_a_measured_profile_has_the_engines_shape_and_loads_back():
    from engine import LLM
    engine = LLM("stories260K").engine
    prof = measure("stories260K", threads=1, reps=1, through_cluster=False)
    assert Profile.from_dict(json.loads(prof.to_json())) == prof
    layout = engine.kv_layout
    assert prof.kv_bytes_per_token == 2 * layout.num_layers * layout.num_kv_heads * layout.head_dim * 4
    assert prof.limits.max_batch == engine.config.max_num_seqs
    assert prof.limits.kv_tokens == engine.pool.num_blocks * engine.config.block_size
    assert prof.source == "measured" and prof.threads_per_worker == 1
    assert len(prof.notes["prefill_points"]) == 5 and "64" in prof.notes["decode_points"]
    assert prof.prefill.ms(256) > 0 and prof.decode.ms(8, 512) > 0


def test_the_serving_overhead_is_measured_on_requests_a_running_cluster_served_exactly():
    from cluster.planner.measure import serve_samples
    from engine import LLM, SamplingParams
    served = serve_samples("stories260K", threads=1, reps=2, prompt=64, out=9, batch=3, short=16)
    assert len(served.alone) == 2 and len(served.batched) == 1
    assert all(0 < ttft < e2e for ttft, e2e in served.alone)
    # warm-up + 2 alone + a batch of 3, every one the offline engine's greedy completion
    assert len(served.outputs) == 6
    llm = LLM("stories260K")
    offline = llm.generate([p for p, _ in served.outputs],
                           [SamplingParams(max_tokens=len(c), temperature=0.0, ignore_eos=True)
                            for _, c in served.outputs])
    assert [o.token_ids for o in offline] == [c for _, c in served.outputs]
    assert [len(c) for _, c in served.outputs] == [2, 9, 9, 9, 9, 9]
    assert served.tokens == 5 * 9 and served.cpu_ms > 0      # the router and client's CPU, counted


def test_the_overhead_is_what_makes_the_engine_costs_predict_the_served_figures():
    from cluster.planner.measure import Served, overhead_from
    from cluster.planner.profile import DecodeCost, PrefillCost
    prof = Profile("p", "cpu", "manual", 1024, prefill=PrefillCost(2.0, 0.01),
                   decode=DecodeCost(1.0, 0.5, 0.0))
    # alone: prefill of 100 tokens is 3 ms, a batch-1 step 1.5 ms; served TTFT 5 ms (2 over),
    # 11 steps of 3 ms (x2); a batch of 4 (prefills 4 x 2.2 ms, steps 3 ms): 11 steps of 6 ms
    served = Served(prompt=100, short=20, out=12, batch=4,
                    alone=[(5.0, 5.0 + 11 * 3.0), (4.0, 4.0 + 11 * 3.0), (6.0, 6.0 + 11 * 3.0)],
                    batched=[4 * 2.2 + 11 * 6.0], cpu_ms=84.0, tokens=3 * 12 + 4 * 12)
    over = overhead_from(prof, served)
    assert abs(over.ttft_ms - 2.0) < 1e-9 and abs(over.step_factor - 2.0) < 1e-9
    assert over.cpu_ms_per_token == 1.0
    fast = Served(100, 20, 12, 4, alone=[(1.0, 1.0 + 11 * 0.75)])
    over = overhead_from(prof, fast)
    assert over.ttft_ms == 0.0 and abs(over.step_factor - 0.5) < 1e-9
    with pytest.raises(ValueError, match="served"):
        overhead_from(prof, Served(100, 20, 12, 4))


def test_the_handoff_is_what_a_disaggregated_stream_takes_beyond_its_steps_and_bytes():
    from cluster.planner.measure import Served, handoff_from
    from cluster.planner.profile import DecodeCost, HandoffCost, Overhead, PrefillCost
    prof = Profile("p", "cpu", "manual", 1000, prefill=PrefillCost(2.0, 0.01),
                   decode=DecodeCost(1.0, 0.5, 0.0), handoff=HandoffCost(5.0, 0.1),
                   overhead=Overhead(2.0, 2.0))
    # a served step is 2 x 1.5 = 3 ms; 100 prompt tokens of 1,000 bytes at 0.1 GB/s are 1 ms;
    # 11 steps after the first token plus a hand-off of 21 ms: a fixed cost of 20 ms
    served = Served(prompt=100, short=20, out=12, batch=4,
                    alone=[(5.0, 5.0 + 21.0 + 11 * 3.0), (4.0, 4.0 + 19.0 + 11 * 3.0),
                           (6.0, 6.0 + 30.0 + 11 * 3.0)])
    cost = handoff_from(prof, served)
    assert abs(cost.base_ms - 20.0) < 1e-9 and cost.gb_per_s == 0.1
    # a stream no slower than its steps: no fixed cost, never a negative one
    assert handoff_from(prof, Served(100, 20, 12, 4, alone=[(1.0, 1.0 + 11 * 3.0)])).base_ms == 0.0
    with pytest.raises(ValueError, match="served"):
        handoff_from(prof, Served(100, 20, 12, 4))


def test_the_handoff_is_measured_on_requests_a_disaggregated_cluster_served_exactly():
    from cluster.planner.measure import serve_samples
    from engine import LLM, SamplingParams
    served = serve_samples("stories260K", threads=1, reps=2, prompt=64, out=9, batch=0,
                           mode="disaggregated")
    assert len(served.alone) == 2 and all(0 < ttft < e2e for ttft, e2e in served.alone)
    assert served.batched == [] and len(served.outputs) == 3    # warm-up + 2 alone, no batch
    offline = LLM("stories260K").generate(
        [p for p, _ in served.outputs],
        [SamplingParams(max_tokens=len(c), temperature=0.0, ignore_eos=True) for _, c in served.outputs])
    assert [o.token_ids for o in offline] == [c for _, c in served.outputs]
    with pytest.raises(ValueError, match="mode"):
        serve_samples("stories260K", threads=1, mode="sideways")
