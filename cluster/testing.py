"""Run a whole Tandem cluster on a background event-loop thread (tests, benchmarks).

    with BackgroundCluster(load_config(None, ["router.grpc_port=0"])) as cluster:
        TandemClient(cluster.target).generate("Once upon a time")
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from cluster.config import ClusterConfig
from cluster.serve import Cluster


class BackgroundCluster:
    def __init__(self, cfg: ClusterConfig, attach_only: bool = False):
        self.cluster = Cluster(cfg, attach_only=attach_only)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cluster-loop", daemon=True)

    @property
    def target(self) -> str:
        return self.cluster.target

    @property
    def backend(self):
        return self.cluster.backend

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, timeout: float = 300.0) -> "BackgroundCluster":
        self._thread.start()
        self.call(self.cluster.start(), timeout)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        if self._thread.is_alive():
            try:
                self.call(self.cluster.stop(grace_s=0.5), timeout)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout)
        if not self.loop.is_running():
            self.loop.close()

    def __enter__(self) -> "BackgroundCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
