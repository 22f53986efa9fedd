"""Prefill overflow: a prompt computed on its decode worker while the prefill pool is busy.

With few workers a disaggregated deployment's prefill pool is its bottleneck whenever prompts
arrive faster than it computes them, while the decode worker, whose steps are short, has
cycles to spare. Splitwise keeps a mixed pool for this reason. Here a request whose prompt
would wait behind at least half its own length of prompt tokens already sent to the least
loaded prefill worker is sent whole to the decode worker chosen for it (``submit``, the path a
colocated worker and a recovery take): it computes the prompt itself, in the same continuous
batch as its decodes, and streams every token. Nothing is shipped, so the request also skips
the hand-off. The choice is made when there is room for the prompt somewhere (``place``): a
prefill worker takes prompts while fewer than ``room_tokens`` (a step's budget) are pending
on it, and beyond that requests wait in the router, so a burst is shared between the prefill
pool and the decode workers as each frees up instead of queueing on the prefill worker it
met at arrival.

The price is paid by that worker's running decodes: the step that holds the prompt takes as
long as its prefill. Two bounds keep it small: a decode worker has at most one overflow
prompt waiting for its first token at a time, and a prompt overflows only when its prefill
(at the prefill workers' measured speed) is at most ``max_stall_tpot`` TPOT objectives, so
with a tight TPOT objective only short prompts overflow. A recovery, the samples of an n > 1
request and a deployment whose workers switch roles (``rebalance``) never overflow.
Neither does a prompt whose first block a prefill worker reports cached (its prefix is
computed there, or in the global store the prefill pool reads). ``router.prefill_overflow=false``
turns it off. Torch-free (the router imports it).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from router.policies.base import WorkerView

RECHECK_S = 0.5     # a waiting request looks again this often (workers come and go)


@dataclass(slots=True)
class PrefillOverflow:
    enabled: bool
    tpot_ms: float
    max_stall_tpot: float
    room_tokens: int = 2048       # a prefill worker takes more prompts while it has fewer pending
    pending: dict[str, int] = field(default_factory=dict)   # worker -> prompt tokens, no first token yet
    overflowed: int = 0                                      # requests sent to their decode worker
    waiting: int = 0                                         # requests waiting for room (place)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.tpot_ms <= 0 or self.max_stall_tpot <= 0:
            raise ValueError("PrefillOverflow needs tpot_ms > 0 and max_stall_tpot > 0")

    def choose(self, prefill_workers: list[WorkerView], decoder: WorkerView, prompt_tokens: int,
               first_block: bytes | None = None) -> bool:
        """True: compute this prompt on ``decoder`` rather than on the prefill pool.
        ``first_block``: the prompt's first chunk hash; a prefill worker that reports it cached
        has a head start (and the global store is the prefill pool's) so nothing overflows."""
        if not self.enabled or not prefill_workers or self.pending.get(decoder.name, 0):
            return False
        if first_block is not None and any(first_block in w.cached_hashes for w in prefill_workers):
            return False
        speeds = [w.last_load.prefill_tokens_per_s for w in prefill_workers
                  if w.last_load is not None and w.last_load.prefill_tokens_per_s > 0]
        if not speeds:       # no measured speed yet: no estimate of the stall
            return False
        if 1000.0 * prompt_tokens / max(speeds) > self.max_stall_tpot * self.tpot_ms:
            return False
        ahead = min(self.pending.get(w.name, 0) for w in prefill_workers)
        return 2 * ahead >= prompt_tokens

    async def place(self, prefill_workers, decoder: WorkerView, prompt_tokens: int,
                    first_block: bytes | None = None) -> bool:
        """Where a prompt goes, decided when there is room for it: True for ``decoder`` when
        ``choose`` says so, else False for the prefill pool if a worker there has fewer than
        ``room_tokens`` prompt tokens pending (or none is healthy: the caller's pick reports
        that). Until either has room the request waits here rather than in one prefill
        worker's queue, so a burst is shared between the prefill pool and the decode workers
        as each frees up. ``prefill_workers`` is a function returning the healthy prefill
        workers. The caller bounds the wait (its deadline) and must call ``sent`` before its
        next await."""
        self.waiting += 1
        try:
            while True:
                pool = prefill_workers()
                if self.choose(pool, decoder, prompt_tokens, first_block):
                    return True
                if not pool or any(self.pending.get(w.name, 0) < self.room_tokens for w in pool):
                    return False
                changed = self._changed
                try:
                    async with asyncio.timeout(RECHECK_S):
                        await changed.wait()
                except TimeoutError:
                    pass
        finally:
            self.waiting -= 1

    def sent(self, worker: str, prompt_tokens: int) -> None:
        self.pending[worker] = self.pending.get(worker, 0) + prompt_tokens

    def done(self, worker: str, prompt_tokens: int) -> None:
        left = self.pending.get(worker, 0) - prompt_tokens
        if left > 0:
            self.pending[worker] = left
        else:
            self.pending.pop(worker, None)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()          # wakes every request waiting in ``place``
