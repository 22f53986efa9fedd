"""One long-poll loop per decode worker, fanning its batched events out to requests.

If the worker dies, every request it held gets a ``WorkerGone`` marker so the backend can
recover it elsewhere; the loop then waits for the actor to come back (restart) and starts
again from a fresh cursor.

Each poll asks the worker to linger ``interval_s`` (``Outbox.events_after``): while a worker
streams steadily, one poll carries the tokens of every step that ended in the interval
instead of one Ray round trip per engine step. Each round trip wakes several threads in the
router and in the worker, and on a busy host those wake-ups take CPU from the engine thread
(measured in docs/disaggregation.md). A request's first token and its end are urgent and
return at once, so coalescing delays neither TTFT nor the finish.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from router.backends.worker_registry import WorkerRegistry

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 1.0
STREAM_INTERVAL_S = 0.02   # router.stream_interval_s


@dataclass(slots=True)
class WorkerGone:
    worker: str
    reason: str


class StreamHub:
    def __init__(self, registry: WorkerRegistry, roles: tuple[str, ...], interval_s: float = STREAM_INTERVAL_S):
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.registry = registry
        # The pools whose workers stream. Workers that switch roles are polled in every role:
        # the streams of their old one finish there.
        self.roles = roles
        self.interval_s = interval_s
        self.subscribers: dict[str, tuple[str, asyncio.Queue]] = {}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll(name)) for role in self.roles
                       for name in self.registry.views[role]]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def subscribe(self, request_id: str, worker: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.subscribers[request_id] = (worker, q)
        return q

    def unsubscribe(self, request_id: str) -> None:
        self.subscribers.pop(request_id, None)

    def fail_worker(self, worker: str, reason: str) -> None:
        for rid, (w, q) in list(self.subscribers.items()):
            if w == worker:
                q.put_nowait(WorkerGone(worker, reason))

    async def _poll(self, name: str) -> None:
        cursor, incarnation = 0, None
        while True:
            view = self.registry.get(name)      # its pool may change (a role switch)
            try:
                seen, new_cursor, events = await view.handle.poll.remote(cursor, POLL_TIMEOUT_S,
                                                                         self.interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # the actor died or is restarting
                logger.warning("decode worker %s stream broke: %s", name, type(exc).__name__)
                self.registry.mark_failed(name)
                self.fail_worker(name, type(exc).__name__)
                cursor, incarnation = 0, None
                await asyncio.sleep(0.5)
                continue
            if incarnation is not None and seen != incarnation:
                logger.warning("decode worker %s restarted; its requests are lost", name)
                self.fail_worker(name, "restarted")
                cursor, incarnation = 0, seen
                continue
            cursor, incarnation = new_cursor, seen
            for ev in events:
                sub = self.subscribers.get(ev.request_id)
                if sub is not None and sub[0] == name:
                    sub[1].put_nowait(ev)
