"""Write-back: asynchronous, bounded, drops rather than grows."""
from __future__ import annotations

import threading

import pytest
import torch

from kv_transfer.store.writeback import BoundedWriteBack


def kv(tokens: int) -> torch.Tensor:
    return torch.zeros(1, 2, tokens, 1, 4)   # 32 bytes per token


def test_submit_never_blocks_and_drops_beyond_the_item_bound():
    release = threading.Event()             # fault injection: a store that hangs
    written = []

    def slow_put(tokens, value, salt):
        release.wait(10)
        written.append(tokens)

    wb = BoundedWriteBack(slow_put, max_items=2, max_bytes=1 << 20)
    try:
        results = [wb.submit([i], kv(1)) for i in range(6)]
        # one in the worker (maybe), two queued; the rest dropped without waiting
        assert results[:2] == [True, True] and results.count(True) <= 3
        assert wb.snapshot().dropped == results.count(False) >= 3
        release.set()
        assert wb.flush(10)
        assert len(written) == results.count(True)
    finally:
        release.set()
        wb.close()


def test_pending_bytes_are_bounded():
    release = threading.Event()
    wb = BoundedWriteBack(lambda *a: release.wait(10), max_items=100, max_bytes=1000)
    try:
        accepted = [wb.submit([0], kv(10)) for _ in range(10)]   # 320 bytes each
        assert wb.snapshot().pending_bytes <= 1000
        assert accepted.count(True) <= 4 and wb.snapshot().dropped >= 6
    finally:
        release.set()
        wb.close()


def test_a_failing_put_is_counted_and_the_worker_survives():
    calls = []

    def flaky(tokens, value, salt):
        calls.append(tokens)
        if len(calls) == 1:
            raise RuntimeError("store exploded")

    wb = BoundedWriteBack(flaky, max_items=4, max_bytes=1 << 20)
    wb.submit([1], kv(1))
    wb.flush(10)
    wb.submit([2], kv(1))
    assert wb.flush(10)
    snap = wb.snapshot()
    assert (snap.failed, snap.done, snap.pending, snap.pending_bytes) == (1, 1, 0, 0)
    wb.close()


def test_close_drops_queued_work_and_stops_the_thread():
    release = threading.Event()
    wb = BoundedWriteBack(lambda *a: release.wait(10), max_items=8, max_bytes=1 << 20)
    for _ in range(4):
        wb.submit([0], kv(1))
    release.set()
    wb.close()
    assert not wb._thread.is_alive()
    assert not wb.submit([0], kv(1))
    with pytest.raises(ValueError):
        BoundedWriteBack(lambda *a: None, max_items=0, max_bytes=1)
