"""``tandem profile`` on the real engine: a profile that loads back, with the model's KV size,
the engine's limits, and a point for every length and batch it measured."""
from __future__ import annotations

import json

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


def test_the_serving_overhead_is_measured_through_a_running_cluster():
    from cluster.planner.measure import measure_overhead
    prof = measure("stories260K", threads=1, reps=1, through_cluster=False)
    over = measure_overhead(prof, "stories260K", threads=1, reps=2)
    assert over.ttft_ms >= 0.0 and over.step_factor >= 1.0
    assert Profile.from_dict({**json.loads(prof.to_json()), "overhead": {"ttft_ms": over.ttft_ms,
                                                                         "step_factor": over.step_factor}})
