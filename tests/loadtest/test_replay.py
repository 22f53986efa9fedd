"""Trace replay: Mooncake hash ids become shared token blocks, reuse survives scaling,
time and lengths are transformed as stated."""
from __future__ import annotations

import itertools

import pytest

from tandem_common.hashing import chunk_hashes
from loadtest.arrivals import arrival_stats
from loadtest.errors import SpecError
from loadtest.replay import TraceTransform, TraceWorkload
from loadtest.targets.base import TargetInfo
from loadtest.traces import load_trace

BIG = TargetInfo(model="m", vocab_size=512, max_model_len=1 << 22)
SMALL = TargetInfo(model="m", vocab_size=512, max_model_len=512)


def specs(workload: TraceWorkload, info: TargetInfo, n: int | None = None):
    plan = workload.plan(info)
    sessions = plan.sessions if n is None else itertools.islice(plan.sessions, n)
    return [s.next_request(None) for s in sessions], plan


def token_level_reuse(prompts: list[list[int]], chunk: int) -> float:
    """Infinite-cache prefix reuse measured on the token ids themselves, with the engine's
    chained chunk hashes (independent of the trace's hash ids)."""
    seen: set[bytes] = set()
    reused = total = 0
    for tokens in prompts:
        hashes = chunk_hashes(tokens, chunk)
        leading = next((i for i, h in enumerate(hashes) if h not in seen), len(hashes))
        reused += leading * chunk
        total += len(tokens)
        seen.update(hashes)
    return reused / total


def test_equal_hash_ids_give_equal_token_blocks_and_different_ids_different_blocks():
    trace = load_trace("mooncake-conv", limit=3)
    # rows 0 and 1 share hash id 0 only: [0, 1, ...] and [0, 14, ...]
    workload = TraceWorkload(trace, TraceTransform(block_tokens=16))
    (a, b, _), _ = specs(workload, BIG)
    assert a.token_ids[:16] == b.token_ids[:16]
    assert a.token_ids[16:32] != b.token_ids[16:32]


def test_reuse_fraction_survives_length_scaling_at_the_token_level():
    trace = load_trace("mooncake-synth", limit=1500)
    for block in (16, 32):
        workload = TraceWorkload(trace, TraceTransform(block_tokens=block))
        sent, _ = specs(workload, BIG)
        summary = workload.describe()["transformation"]
        measured = token_level_reuse([s.token_ids for s in sent], block)
        assert summary["prefix_reuse_original"] == pytest.approx(measured, abs=0.02)
        assert summary["prefix_reuse_replayed"] == pytest.approx(measured, abs=0.02)
        assert summary["clipping"]["clipped_inputs"] == 0


def test_clipping_to_the_context_keeps_prefixes_and_is_reported():
    trace = load_trace("mooncake-conv", limit=400)
    workload = TraceWorkload(trace, TraceTransform(block_tokens=16, max_output=64))
    sent, _ = specs(workload, SMALL)
    assert all(len(s.token_ids) + s.max_tokens <= 512 and s.max_tokens <= 64 for s in sent)
    summary = workload.describe()["transformation"]
    assert summary["clipping"]["clipped_inputs"] > 0 and summary["clipping"]["clipped_outputs"] > 0
    measured = token_level_reuse([s.token_ids for s in sent], 16)
    assert summary["prefix_reuse_replayed"] == pytest.approx(measured, abs=0.02)


def test_length_scales_apply_to_prompts_and_outputs():
    trace = load_trace("azure-conv", limit=200)
    workload = TraceWorkload(trace, TraceTransform(input_scale=0.1, output_scale=0.5))
    sent, _ = specs(workload, BIG)
    for spec, rec in zip(sent, trace.records):
        assert len(spec.token_ids) == max(1, round(rec.input_len * 0.1))
        assert spec.max_tokens == max(1, round(rec.output_len * 0.5))
        assert spec.source_row == rec.row


def test_azure_prompts_share_nothing():
    sent, _ = specs(TraceWorkload(load_trace("azure-code", limit=300),
                                  TraceTransform(input_scale=0.05)), BIG)
    assert token_level_reuse([s.token_ids for s in sent], 16) == 0.0


def test_rate_rescales_time_to_the_requested_mean_rate():
    trace = load_trace("azure-conv", limit=2000)
    workload = TraceWorkload(trace, TraceTransform(rate=20.0))
    _, plan = specs(workload, BIG, n=1)
    offsets = list(plan.start_offsets)
    assert arrival_stats(offsets)["mean_rps"] == pytest.approx(20.0, rel=1e-6)
    # the shape is kept: burstiness (CV) does not change with the time scale
    assert arrival_stats(offsets)["interarrival_cv"] == pytest.approx(
        arrival_stats([r.timestamp_s for r in trace.records])["interarrival_cv"], rel=1e-6)
    assert workload.describe()["transformation"]["time_scale"] == pytest.approx(
        workload.original["mean_rps"] / 20.0)


def test_time_scale_multiplies_timestamps():
    trace = load_trace("mooncake-synth", limit=50)
    _, plan = specs(TraceWorkload(trace, TraceTransform(time_scale=0.25)), BIG, n=1)
    assert list(plan.start_offsets) == pytest.approx([r.timestamp_s * 0.25 for r in trace.records])


def test_conflicting_or_bad_transforms_are_refused():
    with pytest.raises(SpecError, match="time_scale or rate"):
        TraceTransform(time_scale=1.0, rate=2.0)
    with pytest.raises(SpecError, match="input_scale or block_tokens"):
        TraceTransform(input_scale=0.5, block_tokens=16)
    with pytest.raises(SpecError, match="positive"):
        TraceTransform(output_scale=0.0)
    workload = TraceWorkload(load_trace("azure-code", limit=10), TraceTransform(block_tokens=16))
    with pytest.raises(SpecError, match="hash ids"):
        workload.plan(BIG)
