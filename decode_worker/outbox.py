"""Batched streaming: every engine step's tokens for all requests become one outbox entry.

The router long-polls ``events_after(cursor)`` once per worker, so the streaming cost is
one Ray call per poll per worker, not one per token per request.

Events carry contiguous sequence numbers (the first is 1), so the events after a cursor are
the newest ``cursor_now - cursor`` entries: a poll reads them from the right end of the
deque and costs O(new events), however long the retained history. Retention (``RETAIN_S``)
drops events from the left as new ones arrive, O(1) amortised per event.

The engine thread wakes the event loop only when a poll is waiting for what it publishes,
and at most once until that poll has run: one cross-thread wake-up per step at most, none
while nobody listens.

A poll may *linger* (``linger_s``): it returns no sooner than ``linger_s`` after the previous
poll returned, so a steady stream costs one Ray round trip per ``linger_s`` instead of one
per engine step, unless an *urgent* event arrives (a request's first token, or its end),
which returns at once: coalescing never delays a first token or a finish.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from itertools import islice

from decode_worker.messages import StreamEvent

RETAIN_S = 60.0


class Outbox:
    def __init__(self, retain_s: float = RETAIN_S) -> None:
        self.retain_s = retain_s
        self._events: deque[StreamEvent] = deque()
        self._times: deque[tuple[float, int]] = deque()   # (put time, last seq of that put)
        self._next = 1            # the seq the next event gets
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._waiters = 0         # polls parked on _changed that take any event
        self._urgent_waiters = 0  # lingering polls parked on _changed: urgent events only
        self._wake_pending = False
        self._urgent = 0          # seq of the newest urgent event
        self._last_return = 0.0   # when a poll last returned events

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._changed = loop, asyncio.Event()

    def put(self, events: list[StreamEvent], urgent: bool = False) -> None:
        """Called from the engine thread (or the event loop's). ``urgent``: a lingering poll
        returns at once for these events."""
        if not events:
            return
        now = time.monotonic()
        with self._lock:
            self._events.extend(events)
            self._next += len(events)
            self._times.append((now, self._next - 1))
            self._expire(now)
            if urgent:
                self._urgent = self._next - 1
            wake = (self._waiters > 0 or (urgent and self._urgent_waiters > 0)) and not self._wake_pending
            if wake:
                self._wake_pending = True
        if wake and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:   # the loop is closed: nobody is listening
                pass

    def _expire(self, now: float) -> None:
        """Drop events older than the retention window (lock held)."""
        times = self._times
        first = self._next - len(self._events)
        while times and now - times[0][0] > self.retain_s:
            _, last = times.popleft()
            for _ in range(last - first + 1):
                self._events.popleft()
            first = last + 1

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        if self._changed is not None:
            self._changed.set()

    @property
    def cursor(self) -> int:
        return self._next - 1

    def __len__(self) -> int:
        return len(self._events)

    def _after(self, cursor: int) -> tuple[int, list[StreamEvent]]:
        """(cursor now, events after ``cursor``); O(new events). A cursor older than the
        retained history gets everything retained."""
        with self._lock:
            now = self._next - 1
            n = min(max(now - cursor, 0), len(self._events))
            new = list(islice(reversed(self._events), n))
        new.reverse()
        return now, new

    def events_of(self, request_id: str) -> list[StreamEvent]:
        """The retained events of one request, oldest first (a scan: for resuming a stream,
        not for the hot path)."""
        with self._lock:
            return [e for e in self._events if e.request_id == request_id]

    async def events_after(self, cursor: int, timeout_s: float,
                           linger_s: float = 0.0) -> tuple[int, list[StreamEvent]]:
        """Events newer than ``cursor``, waiting up to ``timeout_s`` for the first one, and
        returning no sooner than ``linger_s`` after the previous poll returned events unless
        an urgent one is among them (or ``timeout_s`` ends first)."""
        now = time.monotonic()
        deadline = now + timeout_s
        if self._changed is None:     # not bound to a loop: nothing to wait on
            linger_s = 0.0
        ready_at = min(self._last_return + linger_s, deadline)
        while True:
            if self.cursor > cursor and (now >= ready_at or self._urgent > cursor):
                self._last_return = now
                return self._after(cursor)
            if now >= deadline or self._changed is None:
                return cursor, []
            any_event = now >= ready_at      # else: only an urgent event ends the wait early
            until = deadline if any_event else ready_at
            self._changed.clear()
            with self._lock:
                if any_event:
                    self._waiters += 1
                else:
                    self._urgent_waiters += 1
                ready = self.cursor > cursor and (any_event or self._urgent > cursor)
            try:
                if not ready:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                    # cancellation that lands as the event fires, and the poll never ends.
                    async with asyncio.timeout(until - now):
                        await self._changed.wait()
            except TimeoutError:
                pass
            finally:
                with self._lock:
                    if any_event:
                        self._waiters -= 1
                    else:
                        self._urgent_waiters -= 1
            now = time.monotonic()
