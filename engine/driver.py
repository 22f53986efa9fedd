"""Runs an ``LLMEngine`` on its own thread and bridges it to asyncio.

The engine is single-threaded by design. Workers talk to it only through the driver:
``await driver.call(fn)`` runs ``fn(engine)`` on the engine thread between steps, and
``driver.subscribe(request_id)`` yields the request's ``RequestOutput``s as steps produce
them. ``on_step`` observers see every step's outputs at once (the decode worker batches
them into one stream message per step instead of one per request).
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from engine.llm_engine import LLMEngine
from engine.outputs import RequestOutput

logger = logging.getLogger(__name__)


class EngineDriver:
    def __init__(self, engine: LLMEngine, name: str = "engine"):
        self.engine = engine
        self._commands: queue.SimpleQueue[tuple[Callable[[LLMEngine], Any], Future]] = queue.SimpleQueue()
        self._subscribers: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._observers: list[Callable[[list[RequestOutput]], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.busy_s = 0.0
        self.steps = 0
        self._thread = threading.Thread(target=self._loop, name=f"{name}-driver", daemon=True)
        self._thread.start()

    # -- API (any thread / event loop) ---------------------------------------------------
    def submit(self, fn: Callable[[LLMEngine], Any]) -> Future:
        fut: Future = Future()
        if self._stop.is_set():
            fut.set_exception(RuntimeError("engine driver is stopped"))
        else:
            self._commands.put((fn, fut))
        return fut

    async def call(self, fn: Callable[[LLMEngine], Any]) -> Any:
        return await asyncio.wrap_future(self.submit(fn))

    def subscribe(self, request_id: str) -> asyncio.Queue:
        """A queue of this request's outputs, fed on the caller's running event loop."""
        q: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._subscribers[request_id] = (asyncio.get_running_loop(), q)
        return q

    def unsubscribe(self, request_id: str) -> None:
        with self._lock:
            self._subscribers.pop(request_id, None)

    def add_observer(self, fn: Callable[[list[RequestOutput]], None]) -> None:
        self._observers.append(fn)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._commands.put((lambda e: None, Future()))
        self._thread.join(timeout)

    # -- engine thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            idle = not self.engine.has_unfinished()
            try:
                fn, fut = self._commands.get(timeout=0.5) if idle else self._commands.get_nowait()
            except queue.Empty:
                fn = None
            if fn is not None:
                self._run_command(fn, fut)
                continue   # drain every pending command before the next step
            if self.engine.has_unfinished():
                t0 = time.perf_counter()
                try:
                    outputs = self.engine.step()
                except Exception:   # a bug in a step must not wedge every request forever
                    logger.exception("engine step failed; aborting running requests")
                    outputs = [o for rid in list(self.engine.requests) if (o := self.engine.abort(rid))]
                self.busy_s += time.perf_counter() - t0
                self.steps += 1
                self._deliver(outputs)
        self._fail_pending()

    def _run_command(self, fn: Callable[[LLMEngine], Any], fut: Future) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(self.engine))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            fut.set_exception(exc)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        if not outputs:
            return
        for obs in self._observers:
            try:
                obs(outputs)
            except Exception:
                logger.exception("step observer failed")
        with self._lock:
            targets = [(self._subscribers.get(o.request_id), o) for o in outputs]
        for sub, out in targets:
            if sub is not None:
                loop, q = sub
                try:
                    loop.call_soon_threadsafe(q.put_nowait, out)
                except RuntimeError:   # that event loop is closed: nobody is listening
                    self.unsubscribe(out.request_id)

    def _fail_pending(self) -> None:
        while True:
            try:
                _, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(RuntimeError("engine driver is stopped"))
