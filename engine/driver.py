"""Runs an ``LLMEngine`` on its own thread and bridges it to asyncio: the one engine driver.

The engine is single-threaded by design. Workers talk to it only through the driver:
``await driver.call(fn)`` runs ``fn(engine)`` on the engine thread between steps (every
queued command runs before the next step, in order), and ``driver.subscribe(request_id)``
yields the request's ``RequestOutput``s as steps produce them. ``on_step`` observers see every
step's outputs at once (the decode worker batches them into one stream message per step).

A step that raises is fatal: the engine's state can no longer be trusted. The driver stops,
``error`` holds the exception, every subscriber's queue receives it, pending and later calls
fail with ``EngineFailed``, and ``on_fatal(exc)`` runs (a pool worker exits so Ray restarts it
and the router recovers its requests; the in-process server fails them).
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError

if TYPE_CHECKING:      # the driver itself is torch-free: pool actor classes import it
    from engine.llm_engine import LLMEngine
    from engine.outputs import RequestOutput

logger = logging.getLogger(__name__)


class EngineFailed(EngineError):
    """The engine thread stopped after a failed step (or was stopped)."""


class EngineDriver:
    def __init__(self, engine: LLMEngine, name: str = "engine",
                 on_fatal: Callable[[BaseException], None] | None = None):
        self.engine = engine
        self.on_fatal = on_fatal
        self.error: BaseException | None = None
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
    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None and not self._stop.is_set()

    def submit(self, fn: Callable[[LLMEngine], Any]) -> Future:
        fut: Future = Future()
        if not self.alive:
            fut.set_exception(self._stopped())
        else:
            self._commands.put((fn, fut))
        return fut

    async def call(self, fn: Callable[[LLMEngine], Any]) -> Any:
        return await asyncio.wrap_future(self.submit(fn))

    def subscribe(self, request_id: str) -> asyncio.Queue:
        """A queue of this request's outputs (an exception if the engine fails), fed on the
        caller's running event loop."""
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
        if self._thread.is_alive():
            logger.error("engine driver did not stop within %.1f s", timeout)

    # -- engine thread -------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                wait = self.engine.idle_s()     # None: nothing held; > 0: a fork group gathers
                try:
                    fn, fut = self._commands.get_nowait() if wait == 0 else \
                        self._commands.get(timeout=0.5 if wait is None else wait)
                except queue.Empty:
                    fn = None
                if fn is not None:
                    self._run_command(fn, fut)
                    continue   # drain every pending command before the next step
                if self.engine.has_unfinished():
                    t0 = time.perf_counter()
                    outputs = self.engine.step()
                    self.busy_s += time.perf_counter() - t0
                    self.steps += 1
                    self._deliver(outputs)
        except BaseException as exc:  # noqa: BLE001 - a failed step is fatal (module docstring)
            self._fail(exc)
        finally:
            self._fail_pending()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        with self._lock:
            subscribers = list(self._subscribers.items())
        logger.error("engine step failed; the engine stops (%d requests held): %s: %s",
                     len(self.engine.requests), type(exc).__name__, exc, exc_info=exc)
        if self.on_fatal is not None:
            try:
                self.on_fatal(exc)
            except Exception:
                logger.exception("on_fatal handler failed")
        for _, (loop, q) in subscribers:
            try:
                loop.call_soon_threadsafe(q.put_nowait, exc)
            except RuntimeError:   # that event loop is closed: nobody is listening
                pass

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

    def _stopped(self) -> EngineFailed:
        if self.error is not None:
            return EngineFailed(f"the engine failed: {type(self.error).__name__}: {self.error}")
        return EngineFailed("the engine driver is stopped")

    def _fail_pending(self) -> None:
        while True:
            try:
                _, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(self._stopped())


def exit_on_fatal(exc: BaseException) -> None:
    """``on_fatal`` of a pool worker: exit the process, so Ray restarts the actor and the router
    recovers the requests it held (their KV died with the engine's state)."""
    import os

    logger.critical("exiting so the worker restarts with a fresh engine")
    logging.shutdown()
    os._exit(70)
