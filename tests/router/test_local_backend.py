"""LocalBackend and its engine thread, driven directly (no gRPC)."""
from __future__ import annotations

import asyncio

import pytest

from engine.config import EngineConfig as ModelConfig
from router.backend import backend_names, create_backend
from router.backends.local import LocalBackend
from router.errors import InvalidRequest, NoHealthyWorker
from router.messages import Finished, GenerateRequest, SamplingOptions, TokenDelta


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def req(rid, ids=(1, 403, 407), **sampling):
    return GenerateRequest(request_id=rid, prompt_token_ids=list(ids),
                           sampling=SamplingOptions(**sampling))


def test_backend_streams_deltas_and_one_finished(new_llm):
    async def main():
        backend = LocalBackend(new_llm())
        await backend.start()
        try:
            events = [e async for e in backend.generate(req("a", max_tokens=6, temperature=0.0))]
        finally:
            await backend.close()
        return events
    *deltas, last = run(main())
    assert all(isinstance(d, TokenDelta) for d in deltas)
    assert isinstance(last, Finished) and last.reason.value == "length"
    assert sum(len(d.token_ids) for d in deltas) + len(last.delta.token_ids) == 6
    assert last.usage.prompt_tokens == 3 and last.usage.completion_tokens == 6


def test_closing_the_generator_aborts_and_frees_blocks(new_llm):
    async def main():
        backend = LocalBackend(new_llm())
        await backend.start()
        start = await backend.run_on_engine(lambda e: e.free_block_count())
        gen = backend.generate(req("b", max_tokens=400, temperature=0.0, ignore_eos=True))
        await gen.__anext__()
        held = await backend.run_on_engine(lambda e: e.free_block_count())
        await gen.aclose()
        after = await backend.run_on_engine(lambda e: (e.free_block_count(), "b" in e.requests))
        await backend.close()
        return start, held, after
    start, held, after = run(main())
    assert held < start
    assert after == (start, False)


def test_close_fails_in_flight_requests_with_no_healthy_worker(new_llm):
    async def main():
        backend = LocalBackend(new_llm())
        await backend.start()
        gen = backend.generate(req("c", max_tokens=400, temperature=0.0, ignore_eos=True))
        await gen.__anext__()
        await backend.close()
        with pytest.raises(NoHealthyWorker):
            async for _ in gen:
                pass
        assert not await backend.health()
        with pytest.raises(NoHealthyWorker):
            await backend.generate(req("d")).__anext__()
    run(main())


def test_generate_before_start_is_no_healthy_worker(new_llm):
    async def main():
        backend = LocalBackend(new_llm())
        assert not await backend.health()
        with pytest.raises(NoHealthyWorker):
            await backend.generate(req("e")).__anext__()
    run(main())


def test_engine_rejection_becomes_invalid_request(new_llm):
    async def main():
        backend = LocalBackend(new_llm())
        await backend.start()
        try:
            with pytest.raises(InvalidRequest, match="rejected by the engine"):
                await backend.generate(req("f", ids=[1, 99999])).__anext__()
            assert await backend.health()   # a bad request is not an engine failure
        finally:
            await backend.close()
    run(main())


def test_backend_registry_builds_the_local_backend_from_config():
    assert "local" in backend_names()

    async def main():
        backend = create_backend("local", model_config=ModelConfig(max_num_seqs=2, device="cpu"))
        await backend.start()
        try:
            info = await backend.model_info()
            assert backend.tokenizer.encode("Once upon")[0] == 1
            return info
        finally:
            await backend.close()
    info = run(main())
    assert info.model == "stories260K" and info.max_model_len == 512
    with pytest.raises(ValueError, match="unknown backend 'ray-pools'"):
        create_backend("ray-pools")


def test_close_returns_even_when_the_pump_loses_its_cancellation(new_llm):
    """Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that lands as its result
    arrives; the pump then polls on, and a close that only cancels it would hang."""
    async def main():
        backend = LocalBackend(new_llm())
        await backend.start()
        real_poll, lost = backend._worker.poll, []

        async def poll_losing_one_cancellation(cursor, *args):
            try:
                return await real_poll(cursor, *args)
            except asyncio.CancelledError:       # fault injection: the lost cancellation
                if lost:
                    raise
                lost.append(cursor)
                return backend._worker.incarnation, cursor, []

        backend._worker.poll = poll_losing_one_cancellation
        await asyncio.sleep(0)                   # the pump picks the wrapped poll up next round
        await asyncio.sleep(1.5)
        async with asyncio.timeout(10) as limit:
            await backend.close()
        return lost, limit.expired(), backend._pump.done(), await backend.health()
    lost, hung, pump_ended, healthy = run(main())
    assert lost and not hung and pump_ended and not healthy
