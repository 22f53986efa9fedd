"""The router's view of every pool worker: health, load, and a prefix index per incarnation.

A refresher task asks each worker for its load every ``health_poll_s``. When a worker's
incarnation changes (the actor restarted), everything the router knew about its cache is
dropped: a stale prefix index is worse than none.

Workers that can switch roles (``switchable``, the cluster's rebalancing) announce their role
in every report; a report that names another role moves the worker's view to that pool.

The prefix index travels as deltas: each load call names the version of the worker's index
the router holds, and the report carries only the hashes added and removed since (the whole
set when the router holds none, after a restart, or after a worker was marked failed). Hashes
the router adds itself when it routes a prompt (``expect_cached``) count until the next
report, which replaces them with what the worker really holds, as the full reports did.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from tandem_common.worker_load import WorkerLoad
from router.policies import WorkerView

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _IndexState:
    """What the router holds of one worker's prefix index."""
    incarnation: str = ""
    version: int = 0                  # 0: nothing; the next report sends the whole set
    expected: set[bytes] = field(default_factory=set)   # added by routing, not yet reported

    def reset(self) -> None:
        self.incarnation, self.version = "", 0
        self.expected.clear()


class WorkerRegistry:
    def __init__(self, pools: dict[str, dict[str, object]], poll_s: float = 1.0, timeout_s: float = 5.0,
                 switchable: bool = False):
        self.views: dict[str, dict[str, WorkerView]] = {
            role: {name: WorkerView(name, handle) for name, handle in handles.items()}
            for role, handles in pools.items()}
        self.poll_s, self.timeout_s = poll_s, timeout_s
        self.restarts: dict[str, int] = {}
        self._index: dict[str, _IndexState] = {
            name: _IndexState() for pool in self.views.values() for name in pool}
        self._failed_at: dict[str, float] = {}     # when a call last found the worker dead
        self._moved_at: dict[str, float] = {}      # when a worker last moved between pools
        self._task: asyncio.Task | None = None
        self.switchable = switchable

    def role_of(self, name: str) -> str:
        for role, pool in self.views.items():
            if name in pool:
                return role
        raise KeyError(name)

    def move(self, name: str, role: str) -> None:
        """Serve worker ``name`` from pool ``role`` from now on (a switchable worker that
        announced it, or was just told to)."""
        old = self.role_of(name)
        self._moved_at[name] = time.monotonic()
        if old != role:
            self.views.setdefault(role, {})[name] = self.views[old].pop(name)
            logger.info("worker %s now serves as %s (was %s)", name, role, old)

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
        self._index[name].reset()
        self._failed_at[name] = time.monotonic()

    def expect_cached(self, view: WorkerView, hashes: list[bytes]) -> None:
        """The router sent ``view`` a prompt with these chunks: count them as cached there
        until its next report says what it really holds."""
        cached, expected = view.cached_hashes, self._index[view.name].expected
        for h in hashes:
            if h not in cached:
                cached.add(h)
                expected.add(h)

    async def refresh_once(self) -> None:
        views = [v for pool in self.views.values() for v in pool.values()]
        asked = time.monotonic()
        results = await asyncio.gather(*(self._load(v) for v in views), return_exceptions=True)
        for view, res in zip(views, results):
            if self._failed_at.get(view.name, float("-inf")) >= asked:
                continue   # a report answered before the worker was found dead must not revive it
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
                self._index[view.name].reset()
            view.incarnation = res.incarnation
            # A report asked before the worker last moved may name its old role: not a move back.
            if self.switchable and res.role in self.views and view.name not in self.views[res.role] \
                    and self._moved_at.get(view.name, float("-inf")) < asked:
                self.move(view.name, res.role)
            view.healthy = res.healthy
            view.queue_depth, view.running = res.queue_depth, res.running
            view.free_kv_blocks, view.total_kv_blocks = res.free_kv_blocks, res.total_kv_blocks
            self.apply_hashes(view, res)
            view.last_load = res

    def apply_hashes(self, view: WorkerView, res: WorkerLoad) -> None:
        """Bring ``view.cached_hashes`` to the report's version: O(changes) for a delta."""
        idx = self._index[view.name]
        cached = view.cached_hashes
        if res.hashes_base == 0:   # the whole set: O(size), only on (re)sync
            view.cached_hashes = set(res.hashes_added)
            idx.expected.clear()
        elif res.hashes_base == idx.version and res.incarnation == idx.incarnation:
            cached.difference_update(idx.expected)
            idx.expected.clear()
            cached.difference_update(res.hashes_removed)
            cached.update(res.hashes_added)
        else:   # a delta from a version this router does not hold: resync next time
            logger.debug("worker %s: hash delta from version %d, holding %d; resyncing",
                         view.name, res.hashes_base, idx.version)
            idx.version = 0
            return
        idx.incarnation, idx.version = res.incarnation, res.hashes_version

    def since(self, name: str) -> tuple[str, int]:
        """(incarnation, version) of the worker's prefix index this router holds: the
        arguments of its next ``load`` call."""
        idx = self._index[name]
        return idx.incarnation, idx.version

    async def _load(self, view: WorkerView):
        return await asyncio.wait_for(view.handle.load.remote(*self.since(view.name)), self.timeout_s)

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
