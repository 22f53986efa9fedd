"""Asynchronous, bounded write-back of newly computed KV.

``submit`` never blocks: it queues the work for one background thread or, when the
queue already holds ``max_items`` requests or ``max_bytes`` of KV, drops it and counts
the drop. Memory held by pending write-backs therefore never exceeds the bound, and the
first token never waits for the store.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

PutFn = Callable[[Sequence[int], torch.Tensor, bytes | str | None], None]


@dataclass(slots=True)
class WriteBackCounters:
    queued: int = 0
    done: int = 0
    failed: int = 0
    dropped: int = 0
    pending: int = 0
    pending_bytes: int = 0


class BoundedWriteBack:
    """One worker thread draining a bounded queue of ``put`` calls."""

    def __init__(self, put: PutFn, max_items: int, max_bytes: int,
                 name: str = "tandem-store-writeback") -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError(f"need max_items >= 1 and max_bytes >= 1, got {max_items}, {max_bytes}")
        self._put = put
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[tuple[list[int], torch.Tensor, bytes | str | None, int]] = deque()
        self._cv = threading.Condition()
        self._busy = False
        self._closed = False
        self.counters = WriteBackCounters()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, token_ids: Sequence[int], kv: torch.Tensor,
               salt: bytes | str | None = None) -> bool:
        """Queue one write-back; False (and counted as dropped) if over the bound."""
        size = kv.numel() * kv.element_size()
        with self._cv:
            c = self.counters
            if (self._closed or len(self._items) >= self.max_items
                    or c.pending_bytes + size > self.max_bytes):
                c.dropped += 1
                return False
            self._items.append((list(token_ids), kv, salt, size))
            c.queued += 1
            c.pending += 1
            c.pending_bytes += size
            self._cv.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items and not self._closed:
                    self._cv.wait()
                if not self._items:
                    return
                tokens, kv, salt, size = self._items.popleft()
                self._busy = True
            ok = False
            try:
                self._put(tokens, kv, salt)
                ok = True
            except Exception:  # a failed write-back costs a future hit, never a request
                logger.warning("store write-back failed", exc_info=True)
            finally:
                with self._cv:
                    self._busy = False
                    c = self.counters
                    c.pending -= 1
                    c.pending_bytes -= size
                    if ok:
                        c.done += 1
                    else:
                        c.failed += 1
                    self._cv.notify_all()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._items or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def snapshot(self) -> WriteBackCounters:
        with self._cv:
            return WriteBackCounters(**{f: getattr(self.counters, f)
                                        for f in WriteBackCounters.__dataclass_fields__})

    def close(self, timeout_s: float = 10.0) -> None:
        """Drop what is still queued, finish the write in progress, stop the thread."""
        with self._cv:
            self._closed = True
            c = self.counters
            c.dropped += len(self._items)
            c.pending -= len(self._items)
            c.pending_bytes -= sum(item[3] for item in self._items)
            self._items.clear()
            self._cv.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("store write-back thread still busy after %.1fs", timeout_s)
