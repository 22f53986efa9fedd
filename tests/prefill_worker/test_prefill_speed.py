"""The prefill speed a prefill worker reports is its engine's throughput: prompt tokens
computed per second of engine time, not one request's time (which, in a batch or behind a
queue, counts its wait as compute)."""
from __future__ import annotations

import asyncio

from engine import SamplingParams
from prefill_worker.messages import PrefillRequest
from prefill_worker.testing import InProcessPrefill
from prefill_worker.worker import SPEED_WINDOW_TOKENS


def test_the_reported_speed_is_tokens_computed_over_engine_busy_time():
    harness = InProcessPrefill(None)
    worker = harness.worker
    params = SamplingParams(temperature=0.0, max_tokens=2).to_dict()
    prompts = [[1] + [(7 * i + j) % 500 + 3 for j in range(100 + 10 * i)] for i in range(8)]

    async def main():
        before = await worker.load()
        # Eight prompts at once: the engine batches them (max_num_seqs 4), so most wait.
        await asyncio.gather(*(worker.prefill(PrefillRequest(f"r{i}", p, params, b""))
                               for i, p in enumerate(prompts)))
        after = await worker.load()
        return before, after

    try:
        before, after = asyncio.run(main())
        computed = sum(len(p) for p in prompts)
        assert computed >= SPEED_WINDOW_TOKENS
        assert before.prefill_tokens_per_s > 0                  # measured at start
        assert after.prefill_tokens_per_s == computed / worker.driver.busy_s
    finally:
        worker.shutdown()
