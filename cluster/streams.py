"""One long-poll loop per decode worker, fanning its batched events out to requests.

If the worker dies, every request it held gets a ``WorkerGone`` marker so the backend can
recover it elsewhere; the loop then waits for the actor to come back (restart) and starts
again from a fresh cursor.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cluster.worker_views import WorkerRegistry

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 1.0


@dataclass(slots=True)
class WorkerGone:
    worker: str
    reason: str


class StreamHub:
    def __init__(self, registry: WorkerRegistry, role: str):
        self.registry = registry
        self.role = role
        self.subscribers: dict[str, tuple[str, asyncio.Queue]] = {}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll(name)) for name in self.registry.views[self.role]]

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
        view = self.registry.views[self.role][name]
        cursor, incarnation = 0, None
        while True:
            try:
                seen, new_cursor, events = await view.handle.poll.remote(cursor, POLL_TIMEOUT_S)
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
