"""Runs an ``LLMEngine`` on a dedicated thread and hands its outputs to an asyncio loop.

The engine is not thread-safe, so every engine call happens on this thread: requests
are added and aborted through a command queue, and each loop iteration's outputs are
delivered to the event loop in one ``call_soon_threadsafe``. A step that raises is fatal:
every request held gets the exception, the thread stops and ``error`` is set.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Delivery = list[tuple[str, Any]]     # (request_id, RequestOutput | BaseException)
_STOP = object()


class EngineThread:
    """Owns ``engine`` on one thread; ``deliver`` runs on ``loop`` with each batch of results."""

    def __init__(self, engine: Any, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[Delivery], None], name: str = "engine") -> None:
        self._engine = engine
        self._loop = loop
        self._deliver = deliver
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._active: set[str] = set()       # engine-thread only
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop after its current step and wait for it (blocking)."""
        self._commands.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("engine thread did not stop within %.1f s", timeout)

    def add(self, request_id: str, prompt_token_ids: list[int], params: Any,
            cache_salt: bytes = b"") -> None:
        """Queue a request; an engine rejection is delivered as the request's result."""
        self._commands.put((self._add, (request_id, prompt_token_ids, params, cache_salt)))

    def abort(self, request_id: str) -> None:
        """Queue an abort; it frees the request's KV blocks on the engine thread."""
        self._commands.put((self._abort, (request_id,)))

    def submit(self, fn: Callable[[Any], Any]) -> concurrent.futures.Future:
        """Run ``fn(engine)`` on the engine thread; the future holds its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((self._call, (fn, future)))
        return future

    # -- engine thread ---------------------------------------------------------------------
    def _add(self, out: Delivery, request_id: str, ids: list[int], params: Any, salt: bytes) -> None:
        try:
            self._engine.add_request(request_id, ids, params, cache_salt=salt)
        except Exception as exc:  # the engine's ValueError is the request's fault, not ours
            out.append((request_id, exc))
            return
        self._active.add(request_id)

    def _abort(self, out: Delivery, request_id: str) -> None:
        if request_id in self._active:
            self._active.discard(request_id)
            self._engine.abort(request_id)

    def _call(self, out: Delivery, fn: Callable[[Any], Any], future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(self._engine))
        except Exception as exc:
            future.set_exception(exc)

    def _run(self) -> None:
        try:
            while True:
                out: Delivery = []
                if not self._drain(out, block=not self._engine.has_unfinished()):
                    break
                if self._engine.has_unfinished():
                    for result in self._engine.step():
                        out.append((result.request_id, result))
                        if result.finished:
                            self._active.discard(result.request_id)
                if out:
                    self._post(out)
        except BaseException as exc:
            logger.exception("engine thread failed; %d requests lost", len(self._active))
            self.error = exc
            self._post([(rid, exc) for rid in self._active])
            self._active.clear()
        finally:
            self._fail_pending_calls()

    def _drain(self, out: Delivery, block: bool) -> bool:
        """Run queued commands (waiting for one when idle); False once asked to stop."""
        try:
            command = self._commands.get() if block else self._commands.get_nowait()
        except queue.Empty:
            return True
        while True:
            if command is _STOP:
                return False
            fn, args = command
            fn(out, *args)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _post(self, out: Delivery) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, out)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            logger.debug("event loop closed; dropped %d results", len(out))

    def _fail_pending_calls(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command is not _STOP and command[0] == self._call:
                command[1][1].cancel()
