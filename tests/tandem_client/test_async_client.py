"""AsyncTandemClient against a real router: results, streaming, concurrency, cancellation."""
from __future__ import annotations

import asyncio

import pytest

from tandem_client import AsyncTandemClient, Cancelled, DeadlineExceeded, InvalidArgument

LONG = dict(max_tokens=480, temperature=0.0, ignore_eos=True)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_generate_and_stream_agree_with_the_sync_client(router):
    from tandem_client import TandemClient
    with TandemClient(router.target) as sync:
        want = sync.generate("Once upon a time", max_tokens=12, temperature=0)

    async def main():
        async with AsyncTandemClient(router.target, timeout=30) as client:
            result = await client.generate("Once upon a time", max_tokens=12, temperature=0)
            stream = client.stream("Once upon a time", max_tokens=12, temperature=0)
            deltas = [d async for d in stream]
            return result, deltas, stream.result
    result, deltas, streamed = run(main())
    assert result.token_ids == want.token_ids and result.text == want.text
    assert [t for d in deltas for t in d.token_ids] == want.token_ids
    assert streamed.finish_reason == "length" and streamed.usage.completion_tokens == 12


def test_concurrent_requests_are_batched_and_each_is_exact(router):
    prompts = ["Once upon a time", "Lily went", "The dog", "Tom saw a big"]

    async def main():
        async with AsyncTandemClient(router.target) as client:
            alone = [await client.generate(p, max_tokens=10, temperature=0) for p in prompts]
            together = await asyncio.gather(*(client.generate(p, max_tokens=10, temperature=0)
                                              for p in prompts * 2))
            return alone, together
    alone, together = run(main())
    assert [r.token_ids for r in together] == [r.token_ids for r in alone] * 2


def test_invalid_argument_and_deadline_are_typed(router, engine_held, engine_idle):
    engine_idle()

    async def main():
        async with AsyncTandemClient(router.target) as client:
            with pytest.raises(InvalidArgument) as info:
                await client.generate("hi", max_tokens=0)
            assert info.value.field == "sampling.max_tokens"
            with engine_held(), pytest.raises(DeadlineExceeded):    # 0.3 s, no token
                await client.generate("Once upon a time", timeout=0.3, **LONG)
    run(main())
    engine_idle()


def test_cancel_raises_cancelled_in_the_reader_and_frees_blocks(router, engine_held, engine_idle):
    engine_idle()

    async def main():
        async with AsyncTandemClient(router.target) as client:
            stream = client.stream("Once upon a time", **LONG)
            await stream.__anext__()
            with engine_held():     # the stream cannot finish first, however fast the host
                asyncio.get_running_loop().call_later(0.2, stream.cancel)
                with pytest.raises(Cancelled):
                    async for _ in stream:
                        pass
    run(main())
    engine_idle()


def test_cancelling_the_consumer_task_cancels_the_request(router, engine_idle):
    engine_idle()

    async def main():
        async with AsyncTandemClient(router.target) as client:
            first = asyncio.Event()

            async def consume():
                async for _ in client.stream("Once upon a time", **LONG):
                    first.set()
            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    run(main())
    engine_idle()


def test_leaving_async_with_cancels_on_the_server(router, engine_idle):
    engine_idle()

    async def main():
        async with AsyncTandemClient(router.target) as client:
            async with client.stream("Once upon a time", **LONG) as stream:
                await stream.__anext__()
            info = await client.cluster_info()
            assert info.healthy
            assert (await client.model_info()).model == "stories260K"
    run(main())
    engine_idle()


def test_breaking_out_of_async_for_cancels_on_the_server(router, engine_idle):
    async def main():
        async with AsyncTandemClient(router.target) as client:
            async for _ in client.stream("Once upon a time", **LONG):
                break
            await asyncio.to_thread(engine_idle)   # with the channel still open
    run(main())
