"""Waiting for a condition instead of sleeping for a guessed time (importable by name: the
suite's root conftest puts tests/ on sys.path)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition",
               interval: float = 0.02) -> None:
    """Poll ``predicate`` until it is truthy; AssertionError naming ``what`` after ``timeout``
    seconds. The deadline bounds a hang; it is never what a test measures."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], object], timeout: float = 30.0,
                           what: str = "condition", interval: float = 0.02) -> None:
    """``wait_until`` for code on an event loop (the loop keeps running while it waits)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(interval)

