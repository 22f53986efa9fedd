"""A prefill worker whose KV pool holds only a few prompts at a time serves a burst of them all:
new prompts wait for the blocks of prefilled ones (parked until their KV is exported), rather
than being aborted, and every block comes back."""
from __future__ import annotations

import asyncio
import random

import pytest

from engine import EngineConfig, SamplingParams
from engine.sequence import SequenceStatus
from prefill_worker.messages import PrefillRequest
from prefill_worker.testing import InProcessPrefill


def test_a_burst_larger_than_the_kv_pool_is_prefilled_whole_with_no_block_leaked():
    # 60 blocks of 16 tokens; each 400-token prompt needs 25: two fit at once, eight arrive.
    harness = InProcessPrefill(None, EngineConfig(model="stories260K", num_kv_blocks=60, max_num_seqs=8,
                                                  enable_prefix_caching=False, device="cpu"))
    worker = harness.worker
    rng = random.Random(5)
    prompts = [[1] + [rng.randrange(3, 500) for _ in range(399)] for _ in range(8)]
    params = SamplingParams(temperature=0.0, max_tokens=4).to_dict()

    async def main():
        burst = await asyncio.gather(*(worker.prefill(PrefillRequest(f"r{i}", p, params, b""))
                                       for i, p in enumerate(prompts)))
        alone = [await worker.prefill(PrefillRequest(f"a{i}", p, params, b"")) for i, p in enumerate(prompts)]
        return burst, alone

    try:
        burst, alone = asyncio.run(main())
        assert [r.first_token_id for r in burst] == [r.first_token_id for r in alone]
        assert worker.engine.pool.num_free == worker.engine.pool.num_blocks
    finally:
        worker.shutdown()


def test_a_prompt_waits_for_a_parked_sequences_blocks_and_is_aborted_only_past_the_stall_limit():
    from engine import LLMEngine
    import engine.llm_engine as llm_engine
    engine = LLMEngine(EngineConfig(model="stories260K", num_kv_blocks=40, device="cpu",
                                    enable_prefix_caching=False))
    params = SamplingParams(temperature=0.0, max_tokens=4)
    engine.add_request("parked", [1] + [5] * 399, params, prefill_only=True)
    while engine.requests["parked"].status is not SequenceStatus.PARKED:
        engine.step()
    engine.add_request("waits", [1] + [6] * 399, params, prefill_only=True)
    assert engine.step() == [] and engine.idle_s() == llm_engine.STALL_POLL_S   # waits for the parked one
    engine.release("parked")
    outs = engine.step()
    while not outs:
        outs = engine.step()
    assert outs[0].request_id == "waits" and outs[0].new_token_ids
    # Parked for good (its owner never exports it): the waiting prompt is aborted after the limit.
    engine.add_request("stuck", [1] + [7] * 399, params, prefill_only=True)
    llm_engine.STALL_LIMIT_S, limit = 0.0, llm_engine.STALL_LIMIT_S
    try:
        outs = engine.step()
    finally:
        llm_engine.STALL_LIMIT_S = limit
    assert [(o.request_id, o.finish_reason) for o in outs] == [("stuck", "abort")]


def test_an_aborted_prefill_is_a_typed_error_the_router_retries():
    from prefill_worker.worker import PrefillAborted
    harness = InProcessPrefill(None, EngineConfig(model="stories260K", num_kv_blocks=40, device="cpu",
                                                  enable_prefix_caching=False))
    worker = harness.worker
    import engine.llm_engine as llm_engine
    params = SamplingParams(temperature=0.0, max_tokens=4)
    # Fault injection: a sequence parked for good holds the pool, and the stall limit is 0.
    worker.driver.submit(lambda e: e.add_request("held", [1] + [5] * 399, params, prefill_only=True)).result(10)
    llm_engine.STALL_LIMIT_S, limit = 0.0, llm_engine.STALL_LIMIT_S
    try:
        import time
        deadline = time.monotonic() + 10
        while worker.driver.submit(lambda e: e.requests["held"].status).result(10) is not SequenceStatus.PARKED:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(PrefillAborted, match="no KV blocks"):
            asyncio.run(worker.prefill(PrefillRequest("r", [1] + [6] * 399, params.to_dict(), b"")))
    finally:
        llm_engine.STALL_LIMIT_S = limit
        worker.shutdown()
