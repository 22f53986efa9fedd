"""Run a RouterServer on a background event-loop thread (tests, benchmarks, notebooks).

    with BackgroundRouter(LocalBackend()) as router:
        client = TandemClient(router.target)
        router.call(router.backend.run_on_engine(lambda e: e.free_block_count()))
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from router.config import RouterConfig
from router.backend import Backend
from router.server import RouterServer


class BackgroundRouter:
    """A RouterServer (and its backend) on its own event loop in a daemon thread."""

    def __init__(self, backend: Backend, config: RouterConfig | None = None) -> None:
        self.backend = backend
        self.config = config or RouterConfig(grpc_port=0)
        self.server = RouterServer(backend, self.config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="router-loop",
                                        daemon=True)
        self.port: int | None = None

    @property
    def target(self) -> str:
        return f"{self.config.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> str:
        """Start the loop, the backend and the server; return ``host:port``."""
        self._thread.start()
        self.port = self.call(self.server.start(), timeout)
        return self.target

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and backend, then the loop."""
        if self._thread.is_alive():
            try:
                self.call(self.server.stop(grace=0.5), timeout)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout)
        if not self.loop.is_running():
            self.loop.close()

    def __enter__(self) -> BackgroundRouter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
