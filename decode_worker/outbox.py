"""Batched streaming: every engine step's tokens for all requests become one outbox entry.

The router long-polls ``events_after(cursor)`` once per worker, so the streaming cost is
one Ray call per poll per worker, not one per token per request.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

from decode_worker.messages import StreamEvent

RETAIN_S = 60.0


class Outbox:
    def __init__(self) -> None:
        self._entries: deque[tuple[int, float, StreamEvent]] = deque()
        self._next = 1
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._changed = loop, asyncio.Event()

    def put(self, events: list[StreamEvent]) -> None:
        """Called from the engine thread."""
        if not events:
            return
        now = time.monotonic()
        with self._lock:
            for ev in events:
                self._entries.append((self._next, now, ev))
                self._next += 1
            while self._entries and now - self._entries[0][1] > RETAIN_S:
                self._entries.popleft()
        if self._loop is not None and self._changed is not None:
            self._loop.call_soon_threadsafe(self._changed.set)

    @property
    def cursor(self) -> int:
        return self._next - 1

    def _after(self, cursor: int) -> tuple[int, list[StreamEvent]]:
        with self._lock:
            return self._next - 1, [ev for seq, _, ev in self._entries if seq > cursor]

    async def events_after(self, cursor: int, timeout_s: float) -> tuple[int, list[StreamEvent]]:
        """Events newer than ``cursor``, waiting up to ``timeout_s`` for the first one."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.cursor > cursor:
                return self._after(cursor)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._changed is None:
                return cursor, []
            self._changed.clear()
            if self.cursor > cursor:
                continue
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return cursor, []
