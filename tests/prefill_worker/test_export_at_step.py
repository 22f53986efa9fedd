"""A prefilled sequence's KV is exported and its blocks released on the engine thread in the
step that prefilled it, before the engine starts another: the first token and the KV hand-off
never wait behind the next queued prompt's prefill."""
from __future__ import annotations

import asyncio
import random

from engine import EngineConfig, LLMEngine, SamplingParams
from prefill_worker.messages import PrefillRequest
from prefill_worker.testing import InProcessPrefill


def test_each_prompt_is_exported_in_the_step_that_prefilled_it_and_keeps_its_first_token():
    cfg = EngineConfig(model="stories260K", max_num_batched_tokens=256, enable_prefix_caching=False,
                       device="cpu")
    harness = InProcessPrefill(None, cfg)
    worker = harness.worker
    held_after_step: list[tuple[int, list[str]]] = []    # (step, parked requests still held)
    worker.driver.add_observer(lambda outs: held_after_step.append(
        (worker.driver.steps, [o.request_id for o in outs if o.request_id in worker.engine.requests])))
    rng = random.Random(3)
    prompts = [[1] + [rng.randrange(3, 500) for _ in range(299)] for _ in range(4)]
    params = SamplingParams(temperature=0.0, max_tokens=8).to_dict()

    async def main():
        # Four 300-token prompts at once with a 256-token step budget: they queue, one chunk a step.
        return await asyncio.gather(*(worker.prefill(PrefillRequest(f"r{i}", p, params, b""))
                                      for i, p in enumerate(prompts)))

    try:
        results = asyncio.run(main())
        outputs = [ids for _, ids in held_after_step if ids]
        assert outputs == []          # no step ended with a prefilled sequence still held
        assert worker.engine.pool.num_free == worker.engine.pool.num_blocks
        assert not worker._exported
        # Each first token is the one an engine computes for its prompt alone.
        ref = LLMEngine(cfg)
        for i, (prompt, res) in enumerate(zip(prompts, results)):
            ref.add_request(f"x{i}", prompt, SamplingParams(temperature=0.0, max_tokens=8), prefill_only=True)
            while not ref.step():
                pass
            assert res.first_token_id == ref.requests[f"x{i}"].token_ids[-1]
    finally:
        worker.shutdown()
