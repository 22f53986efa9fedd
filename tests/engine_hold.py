"""Fault injection for tests on a real router over a ``LocalBackend`` (importable by name):
``with engine_held(router):`` keeps the engine thread busy until the block ends, so requests
already running get no more tokens and new ones wait for their first, however fast the host.
Deadlines and cancels are then certain to land while the request is in flight."""
from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager


@contextmanager
def engine_held(router, timeout: float = 120.0):
    """``router``: a ``router.testing.BackgroundRouter`` (or anything with ``backend`` and
    ``loop``) whose backend runs an engine thread (``run_on_engine``)."""
    held, release = threading.Event(), threading.Event()

    def wait(engine) -> None:
        held.set()
        release.wait(timeout)
    done = asyncio.run_coroutine_threadsafe(router.backend.run_on_engine(wait), router.loop)
    try:
        assert held.wait(30), "the engine thread did not take the hold"
        yield
    finally:
        release.set()
        done.result(30)
