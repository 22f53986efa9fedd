"""The streaming sender's board: a receiver told before the transfer opens waits for it, a
cancelled transfer ends every wait with its reason (whether or not it was opened), and one
poll carries a burst of frames."""
from __future__ import annotations

import threading
import time

from kv_transfer.transports.ray_source import LINGER_S, SectionBoard


def _later(delay: float, fn, *args) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), fn(*args)))
    t.start()
    return t


def test_an_early_receiver_waits_for_the_transfer_to_open():
    board = SectionBoard()
    assert board.wait("t1", 0, 0.05).known is False                 # told late: unknown at once
    assert board.wait("t1", 0, 0.05, early=True).known is False     # early: after its wait
    t = _later(0.05, board.open, "t1", time.time() + 30)
    t2 = _later(0.1, board.append, "t1", "ref-0", 10)
    got = board.wait("t1", 0, 5.0, early=True)
    t.join(), t2.join()
    assert got.known and got.refs == ["ref-0"] and not got.done


def test_a_cancel_ends_a_wait_opened_or_not_and_outlives_close():
    board = SectionBoard()
    t = _later(0.05, board.cancel, "never", "the request ended at its first token", time.time() + 30)
    got = board.wait("never", 0, 5.0, early=True)
    t.join()
    assert got.done and got.error == "the request ended at its first token"
    board.open("opened", time.time() + 30)
    board.cancel("opened", "the client left", time.time() + 30)
    board.close("opened")                                   # the sender finishing does not undo it
    assert board.wait("opened", 0, 0.1).error == "the client left"


def test_one_poll_carries_a_burst_of_frames():
    board = SectionBoard()
    board.open("b", time.time() + 30)

    def burst():
        for i in range(3):
            board.append("b", f"ref-{i}", 1)
        board.close("b")
    t = _later(0.02, burst)
    got = board.wait("b", 0, 5.0)
    t.join()
    assert got.refs == ["ref-0", "ref-1", "ref-2"] and got.done
    board.open("slow", time.time() + 30)
    board.append("slow", "ref-0", 1)
    start = time.monotonic()
    got = board.wait("slow", 0, 5.0)                       # more may follow: waits the linger only
    assert got.refs == ["ref-0"] and not got.done and time.monotonic() - start < 1.0 + LINGER_S
