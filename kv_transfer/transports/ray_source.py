"""Sender-side board for layer-wise streaming over Ray, and the actor mix-ins that serve it.

Ray cannot hand out a reference to an object that does not exist yet, and a streaming
generator's refs cannot be passed to another actor. So a streaming sender publishes each
frame's ObjectRef on this per-process board as soon as it is ``ray.put``; the receiver
long-polls the sender actor (``kv_transfer_poll``) for refs it has not seen and
``ray.get``s them zero-copy while later layers are still being computed.

The sender actor class mixes in ``RayKVSource`` (threaded actor: give it
``max_concurrency >= 2`` so a poll is served while the actor encodes) or
``AsyncRayKVSource`` (asyncio actor: encode in a thread, e.g. ``asyncio.to_thread``).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

#: how long past its deadline an uncollected transfer keeps its objects alive
GRACE_S = 5.0
#: once new frames are there, how long a poll waits for more of the same burst
LINGER_S = 0.003


@dataclass(slots=True)
class _Entry:
    deadline: float
    refs: list = field(default_factory=list)
    sizes: list = field(default_factory=list)
    closed: bool = False
    error: str | None = None


@dataclass(slots=True)
class PollResult:
    """New frames since ``start``; ``done`` once the sender closed and nothing is left."""
    refs: list
    sizes: list
    done: bool
    error: str | None = None
    known: bool = True


class SectionBoard:
    """Transfer id -> the ObjectRefs published so far, with a condition to wait on."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._entries: dict[str, _Entry] = {}

    def open(self, transfer_id: str, deadline: float) -> None:
        with self._cv:
            self._sweep()
            if transfer_id in self._entries:
                raise ValueError(f"KV transfer {transfer_id!r} is already open")
            self._entries[transfer_id] = _Entry(deadline)
            self._cv.notify_all()           # an early receiver may be waiting for it

    def append(self, transfer_id: str, ref: Any, size: int) -> bool:
        """Publish a frame; False when the receiver already gave up (released), the transfer
        was cancelled, or it expired."""
        with self._cv:
            entry = self._entries.get(transfer_id)
            if entry is None or entry.error is not None:
                return False
            entry.refs.append(ref)
            entry.sizes.append(size)
            self._cv.notify_all()
            return True

    def cancel(self, transfer_id: str, reason: str, deadline: float) -> None:
        """This transfer will not (or no longer) send: a receiver waiting for it, opened or
        not yet, gets ``reason`` as the sender's error (kept until ``deadline`` + grace)."""
        with self._cv:
            entry = self._entries.setdefault(transfer_id, _Entry(deadline))
            entry.closed, entry.error = True, reason
            self._cv.notify_all()

    def close(self, transfer_id: str, error: str | None = None) -> None:
        with self._cv:
            entry = self._entries.get(transfer_id)
            if entry is not None:          # a cancel's error stays
                entry.closed, entry.error = True, entry.error or error
                self._cv.notify_all()

    def wait(self, transfer_id: str, start: int, wait_s: float, early: bool = False) -> PollResult:
        """Frames from index ``start`` on, waiting up to ``wait_s`` for at least one.
        ``early``: the receiver was told before the sender opened the transfer, so an unknown
        id is waited for (``known=False`` only when the wait ends without it)."""
        end = time.monotonic() + max(0.0, wait_s)
        linger_until = None
        with self._cv:
            while True:
                entry = self._entries.get(transfer_id)
                if entry is None and not early:
                    return PollResult([], [], True, None, known=False)
                if entry is None:
                    left = end - time.monotonic()
                    if left <= 0:
                        return PollResult([], [], False, None, known=False)
                    self._cv.wait(left)
                    continue
                if entry.error is not None:
                    return PollResult([], [], True, entry.error)
                if len(entry.refs) > start and not entry.closed and linger_until is None:
                    # Frames come in bursts (a whole KV is encoded in one go): wait a moment
                    # for the rest, so one reply (and one get) carries them all.
                    linger_until = time.monotonic() + LINGER_S
                if entry.closed or linger_until is not None and time.monotonic() >= linger_until:
                    return PollResult(entry.refs[start:], entry.sizes[start:],
                                      entry.closed, None)
                if linger_until is not None:
                    self._cv.wait(max(0.0, linger_until - time.monotonic()))
                    continue
                left = end - time.monotonic()
                if left <= 0:
                    return PollResult([], [], False)
                self._cv.wait(left)

    def release(self, transfer_id: str) -> None:
        """The receiver is done: drop our references so Ray can free the objects."""
        with self._cv:
            self._entries.pop(transfer_id, None)

    def __len__(self) -> int:
        with self._cv:
            return len(self._entries)

    def _sweep(self) -> None:
        now = time.time()
        for tid in [t for t, e in self._entries.items() if e.deadline + GRACE_S < now]:
            logger.warning("streamed KV transfer %s expired before its receiver finished", tid)
            del self._entries[tid]


BOARD = SectionBoard()
POLL_THREADS = 256          # blocked board waits an asyncio sender actor serves at once
_POLL_POOL: ThreadPoolExecutor | None = None


def _poll_pool() -> ThreadPoolExecutor:
    global _POLL_POOL
    if _POLL_POOL is None:
        _POLL_POOL = ThreadPoolExecutor(POLL_THREADS, thread_name_prefix="kv-poll")
    return _POLL_POOL


class RayKVSource:
    """Mix into a (threaded) Ray actor that streams KV with ``get_transport("ray", streaming=True)``."""

    def kv_transfer_poll(self, transfer_id: str, start: int, wait_s: float, early: bool = False) -> PollResult:
        return BOARD.wait(transfer_id, start, wait_s, early)

    def kv_transfer_release(self, transfer_id: str) -> None:
        BOARD.release(transfer_id)

    def kv_transfer_cancel(self, transfer_id: str, reason: str, deadline: float) -> None:
        BOARD.cancel(transfer_id, reason, deadline)


class AsyncRayKVSource:
    """Mix into an asyncio Ray actor that streams KV with ``get_transport("ray", streaming=True)``."""

    async def kv_transfer_poll(self, transfer_id: str, start: int, wait_s: float,
                               early: bool = False) -> PollResult:
        # Polls block on the board's condition (early ones for as long as a prefill queues):
        # they get threads of their own, so the actor's default pool stays free for its work.
        return await asyncio.get_running_loop().run_in_executor(
            _poll_pool(), BOARD.wait, transfer_id, start, wait_s, early)

    async def kv_transfer_release(self, transfer_id: str) -> None:
        BOARD.release(transfer_id)

    async def kv_transfer_cancel(self, transfer_id: str, reason: str, deadline: float) -> None:
        """The transfer will not be sent (its request ended): a receiver waiting gives up."""
        BOARD.cancel(transfer_id, reason, deadline)
