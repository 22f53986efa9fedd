"""The outbox batches every step's events and never loses or repeats one across polls."""
from __future__ import annotations

import asyncio
import threading

from decode_worker.messages import StreamEvent
from decode_worker.outbox import Outbox


def _ev(i: int) -> StreamEvent:
    return StreamEvent(f"r{i % 3}", [i], str(i))


def test_polls_see_every_event_exactly_once_while_a_thread_publishes():
    async def main():
        box = Outbox()
        box.bind(asyncio.get_running_loop())

        def produce():
            for i in range(300):
                box.put([_ev(i)])

        t = threading.Thread(target=produce)
        t.start()
        seen, cursor = [], 0
        while len(seen) < 300:
            cursor, events = await box.events_after(cursor, 1.0)
            seen.extend(e.token_ids[0] for e in events)
        t.join()
        return seen

    assert asyncio.run(main()) == list(range(300))


def test_an_idle_poll_returns_empty_after_its_timeout():
    async def main():
        box = Outbox()
        box.bind(asyncio.get_running_loop())
        return await box.events_after(0, 0.05)

    assert asyncio.run(main()) == (0, [])


def test_a_poll_wakes_as_soon_as_an_event_arrives():
    async def main():
        box = Outbox()
        box.bind(asyncio.get_running_loop())
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: threading.Thread(target=box.put, args=([_ev(7)],)).start())
        return await box.events_after(0, 30.0)

    cursor, events = asyncio.run(main())
    assert cursor == 1 and [e.token_ids for e in events] == [[7]]
