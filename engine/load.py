"""The load report a worker sends the router (``LoadReporter``: figures read on the engine
thread), and the feed that turns its cached block hashes into deltas.

A load report used to carry every cached block hash, each second. ``CachedHashFeed`` keeps
the last set it saw and a short log of versioned changes, so a report carries only what
changed since the version the caller already holds (``since``); a caller with no version,
or one older than the log, gets the whole set once (``base`` 0).
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING

from tandem_common.worker_load import WorkerLoad

if TYPE_CHECKING:
    from engine.driver import EngineDriver
    from engine.llm_engine import LLMEngine

HISTORY = 16   # versions a caller may lag behind and still get a delta


class LoadReporter:
    """Builds a worker's ``WorkerLoad`` (every role alike): figures read on the engine thread,
    and, where the router routes by prefix (prefill and colocated workers), the engine's
    prefix-cache index as a delta from the version the caller holds."""

    def __init__(self, worker_id: str, incarnation: str, role: str, with_hashes: bool, node: str = ""):
        self.worker_id, self.incarnation, self.role, self.node = worker_id, incarnation, role, node
        self.feed = CachedHashFeed() if with_hashes else None
        self.started = time.monotonic()
        self._steps = (0, 0.0)      # the driver's (steps, busy seconds) at the previous report
        self.counters = (0, 0.0)    # (prompt tokens computed, busy seconds) at the last report

    async def report(self, driver: EngineDriver, since_incarnation: str = "", since_version: int = 0,
                     prefill_tokens_per_s: float = 0.0, store: dict | None = None) -> WorkerLoad:
        wall = time.monotonic() - self.started
        with_hashes = self.feed is not None
        # On the engine thread, between steps: the figures and the step counters agree.
        fig, hashes, steps = await driver.call(lambda e: (_figures(e, wall),
                                                          frozenset(e.pool.by_hash) if with_hashes else None,
                                                          (driver.steps, driver.busy_s)))
        # (prompt tokens computed, engine busy s), read together: what a prefill speed needs
        self.counters = (fig.pop("computed_prompt_tokens"), steps[1])
        load = WorkerLoad(self.worker_id, self.incarnation, self.role, fig["queue_depth"], fig["running"],
                          fig["free_kv_blocks"], fig["total_kv_blocks"], fig["tokens_per_s"],
                          prefill_tokens_per_s, store=store or {}, node=self.node,
                          queued_prompt_tokens=fig["queued_prompt_tokens"], step_ms=self._step_ms(*steps))
        if hashes is not None:
            self.feed.update(hashes)
            load.hashes_base, load.hashes_version, load.hashes_added, load.hashes_removed = \
                self.feed.since(since_version if since_incarnation == self.incarnation else 0)
        return load

    def _step_ms(self, steps: int, busy: float) -> float:
        """The mean engine step since the previous report, in ms (0: no step ran)."""
        prev_steps, prev_busy = self._steps
        self._steps = (steps, busy)
        return 1000 * (busy - prev_busy) / (steps - prev_steps) if steps > prev_steps else 0.0


def _figures(engine: LLMEngine, wall_s: float) -> dict:
    sched = engine.scheduler
    tokens = engine.stats["generated_tokens"]
    return {
        "computed_prompt_tokens": engine.stats["prompt_tokens"] - engine.stats["cached_tokens"],
        "queue_depth": len(sched.waiting),
        "running": len(sched.running),
        # Prompt tokens not computed yet, of requests waiting or still in (chunked) prefill.
        "queued_prompt_tokens": sum(s.prompt_len - s.num_computed for q in (sched.waiting, sched.running)
                                    for s in q if s.num_computed < s.prompt_len),
        "free_kv_blocks": engine.pool.num_free,
        "total_kv_blocks": engine.pool.num_blocks,
        "tokens_per_s": tokens / wall_s if wall_s > 0 else 0.0,
    }


class CachedHashFeed:
    """Versioned deltas of a set of block hashes, for callers at different versions.

    ``update(current)`` records what changed since the last update as a new version (none
    if nothing did); ``since(v)`` returns ``(base, version, added, removed)``: applying
    ``removed`` then ``added`` to the set a caller held at ``base`` gives the set at
    ``version``. ``base`` 0 means ``added`` is the whole set.
    """

    def __init__(self, history: int = HISTORY):
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.version = 0
        self._current: frozenset[bytes] = frozenset()
        self._log: deque[tuple[int, frozenset[bytes], frozenset[bytes]]] = deque(maxlen=history)

    def update(self, current: Collection[bytes]) -> None:
        current = current if isinstance(current, frozenset) else frozenset(current)
        added, removed = current - self._current, self._current - current
        if not added and not removed:
            return
        self.version += 1
        self._log.append((self.version, added, removed))
        self._current = current

    def since(self, version: int) -> tuple[int, int, list[bytes], list[bytes]]:
        if version == self.version:
            return version, version, [], []
        if version <= 0 or version > self.version or not self._log or version < self._log[0][0] - 1:
            return 0, self.version, list(self._current), []
        added: set[bytes] = set()
        removed: set[bytes] = set()
        for v, add, rem in self._log:
            if v <= version:
                continue
            for h in rem:
                if h in added:
                    added.discard(h)
                else:
                    removed.add(h)
            for h in add:
                if h in removed:
                    removed.discard(h)
                else:
                    added.add(h)
        return version, self.version, list(added), list(removed)
