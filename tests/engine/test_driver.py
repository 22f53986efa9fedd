"""The engine driver: the engine on its own thread, commands in order, a failed step fatal."""
from __future__ import annotations

import asyncio

import pytest

from engine import LLM, SamplingParams
from engine.driver import EngineDriver, EngineFailed

LONG = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)


def test_outputs_stream_to_subscribers_and_commands_run_in_submission_order():
    driver = EngineDriver(LLM("stories260K").engine, "ordered")
    try:
        async def main():
            q = driver.subscribe("a")
            await driver.call(lambda e: e.add_request("a", [1, 403, 407], LONG))
            outs = [await asyncio.wait_for(q.get(), 30)]
            while not outs[-1].finished:
                outs.append(await asyncio.wait_for(q.get(), 30))
            return outs
        outs = asyncio.run(main())
        assert len(outs[-1].token_ids) == 64 and outs[-1].finish_reason == "length"
        seen: list[int] = []
        futures = [driver.submit(lambda e, i=i: seen.append(i)) for i in range(50)]
        for f in futures:
            f.result(10)
        assert seen == list(range(50))
    finally:
        driver.stop()


def test_a_failed_step_stops_the_engine_and_fails_every_waiter_and_later_call():
    engine = LLM("stories260K").engine
    real_step, calls = engine.step, {"n": 0}

    def failing_step():    # fault injection: the engine fails on its third step
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("injected engine fault")
        return real_step()

    engine.step = failing_step
    fatal: list[BaseException] = []
    driver = EngineDriver(engine, "failing", on_fatal=fatal.append)

    async def main():
        queues = {rid: driver.subscribe(rid) for rid in ("a", "b")}
        for rid in queues:
            await driver.call(lambda e, rid=rid: e.add_request(rid, [1, 403, 407], LONG))
        got = {}
        for rid, q in queues.items():
            items = [await asyncio.wait_for(q.get(), 30)]
            while not isinstance(items[-1], BaseException):
                items.append(await asyncio.wait_for(q.get(), 30))
            got[rid] = items
        return got

    got = asyncio.run(main())
    for items in got.values():
        assert isinstance(items[-1], RuntimeError) and "injected engine fault" in str(items[-1])
        assert not any(isinstance(i, BaseException) for i in items[:-1])
    assert len(fatal) == 1 and fatal[0] is driver.error is got["a"][-1]
    assert not driver.alive
    with pytest.raises(EngineFailed, match="injected engine fault"):
        driver.submit(lambda e: None).result(5)
    driver.stop()
