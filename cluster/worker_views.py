"""The router's view of every pool worker: health, load, and a prefix index per incarnation.

A refresher task asks each worker for its load every ``health_poll_s``. When a worker's
incarnation changes (the actor restarted), everything the router knew about its cache is
dropped: a stale prefix index is worse than none.
"""
from __future__ import annotations

import asyncio
import logging

from router.policies import WorkerView

logger = logging.getLogger(__name__)


class WorkerRegistry:
    def __init__(self, pools: dict[str, dict[str, object]], poll_s: float = 1.0, timeout_s: float = 5.0):
        self.views: dict[str, dict[str, WorkerView]] = {
            role: {name: WorkerView(name, handle) for name, handle in handles.items()}
            for role, handles in pools.items()}
        self.poll_s, self.timeout_s = poll_s, timeout_s
        self.restarts: dict[str, int] = {}
        self._task: asyncio.Task | None = None

    def healthy(self, role: str, exclude: set[str] = frozenset()) -> list[WorkerView]:
        return [v for v in self.views[role].values() if v.healthy and v.name not in exclude]

    def get(self, name: str) -> WorkerView:
        for pool in self.views.values():
            if name in pool:
                return pool[name]
        raise KeyError(name)

    def mark_failed(self, name: str) -> None:
        view = self.get(name)
        if view.healthy:
            logger.warning("worker %s marked unhealthy", name)
        view.healthy = False
        view.cached_hashes.clear()

    async def refresh_once(self) -> None:
        views = [v for pool in self.views.values() for v in pool.values()]
        results = await asyncio.gather(*(self._load(v) for v in views), return_exceptions=True)
        for view, res in zip(views, results):
            if isinstance(res, BaseException):
                if view.healthy:
                    logger.warning("worker %s did not report load: %s", view.name, res)
                view.healthy = False
                continue
            if view.incarnation and res.incarnation != view.incarnation:
                logger.warning("worker %s restarted (incarnation %s -> %s); dropping its prefix index",
                               view.name, view.incarnation, res.incarnation)
                self.restarts[view.name] = self.restarts.get(view.name, 0) + 1
                view.cached_hashes.clear()
            view.incarnation = res.incarnation
            view.healthy = res.healthy
            view.queue_depth, view.running = res.queue_depth, res.running
            view.free_kv_blocks, view.total_kv_blocks = res.free_kv_blocks, res.total_kv_blocks
            view.cached_hashes = set(res.cached_chunk_hashes)
            view.last_load = res

    async def _load(self, view: WorkerView):
        return await asyncio.wait_for(view.handle.load.remote(), self.timeout_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.refresh_once()
            except Exception:
                logger.exception("load refresh failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
