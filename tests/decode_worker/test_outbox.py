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


def test_a_poll_after_a_long_history_returns_exactly_the_new_events():
    async def main():
        box = Outbox()
        box.bind(asyncio.get_running_loop())
        for i in range(0, 50_000, 10):                       # 50,000 retained events
            box.put([_ev(j) for j in range(i, i + 10)])
        cursor, _ = await box.events_after(49_990, 0.0)
        assert cursor == 50_000
        box.put([_ev(50_000), _ev(50_001)])
        box.put([_ev(50_002)])
        return cursor, await box.events_after(cursor, 1.0), len(box)

    cursor, (new_cursor, events), retained = asyncio.run(main())
    assert new_cursor == cursor + 3 and [e.token_ids[0] for e in events] == [50_000, 50_001, 50_002]
    assert retained == 50_003


def test_events_older_than_the_retention_window_are_dropped_and_a_stale_cursor_gets_the_rest():
    async def main():
        box = Outbox(retain_s=0.05)
        box.bind(asyncio.get_running_loop())
        box.put([_ev(0), _ev(1)])
        box.put([_ev(2)])
        await asyncio.sleep(0.1)
        box.put([_ev(3), _ev(4)])                             # drops the first two puts
        return len(box), await box.events_after(0, 1.0), await box.events_after(4, 1.0)

    retained, (c1, stale), (c2, fresh) = asyncio.run(main())
    assert retained == 2
    assert c1 == c2 == 5
    assert [e.token_ids[0] for e in stale] == [3, 4]
    assert [e.token_ids[0] for e in fresh] == [4]


class _CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts the wake-ups other threads send it."""

    def __init__(self):
        super().__init__()
        self.wakeups = 0

    def call_soon_threadsafe(self, callback, *args, context=None):
        self.wakeups += 1
        return super().call_soon_threadsafe(callback, *args, context=context)


def test_the_engine_thread_wakes_the_loop_only_for_a_waiting_poll_and_once_per_wait():
    loop = _CountingLoop()
    try:
        box = Outbox()
        box.bind(loop)

        def publish(n):
            t = threading.Thread(target=lambda: [box.put([_ev(i)]) for i in range(n)])
            t.start()
            t.join()

        publish(100)                                         # nobody polls: no wake-ups
        assert loop.wakeups == 0

        async def poll_while_publishing():
            loop.call_later(0.05, publish, 50)               # 50 puts while one poll waits
            return await box.events_after(100, 5.0)

        cursor, events = loop.run_until_complete(poll_while_publishing())
        assert cursor >= 101 and events
        assert loop.wakeups == 1
    finally:
        loop.close()


def test_a_lingering_poll_holds_steady_tokens_but_returns_at_once_for_an_urgent_event():
    async def main():
        box = Outbox()
        box.bind(asyncio.get_running_loop())
        box.put([_ev(0)], urgent=True)
        cursor, _ = await box.events_after(0, 1.0, linger_s=60.0)    # the first poll: at once
        loop = asyncio.get_running_loop()

        def publish():
            box.put([_ev(1)])                                        # steady: held
            box.put([_ev(2)])
            loop.call_later(0.05, lambda: threading.Thread(
                target=box.put, args=([_ev(3)],), kwargs={"urgent": True}).start())

        loop.call_soon(lambda: threading.Thread(target=publish).start())
        held = await asyncio.wait_for(box.events_after(cursor, 60.0, linger_s=60.0), 30.0)
        box.put([_ev(4)])                                            # steady, and the poll ends at
        timed_out = await box.events_after(held[0], 0.05, linger_s=60.0)   # its timeout with it
        return held, timed_out

    (c1, held), (c2, timed_out) = asyncio.run(main())
    assert [e.token_ids[0] for e in held] == [1, 2, 3] and c1 == 4
    assert [e.token_ids[0] for e in timed_out] == [4] and c2 == 5


def test_an_unbound_outbox_answers_at_once_even_when_asked_to_linger():
    box = Outbox()
    box.put([_ev(0)])
    box.put([_ev(1)])
    cursor, events = asyncio.run(box.events_after(0, 5.0, linger_s=60.0))
    assert cursor == 2 and [e.token_ids[0] for e in events] == [0, 1]
    assert asyncio.run(box.events_after(2, 5.0, linger_s=60.0)) == (2, [])
