"""The router's gRPC server: Tandem service, health and reflection on one ``grpc.aio`` server.

    server = RouterServer(backend, RouterConfig(grpc_port=0))
    port = await server.start()      # the backend is started too
    ...
    await server.stop()

The health service reports ``SERVING`` for ``""`` and ``tandem.v1.Tandem`` while
``backend.health()`` is true, polled every ``health_poll_s``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cluster.config import RouterConfig
from protos.tandem.v1 import tandem_service_pb2, tandem_service_pb2_grpc
from router.backend import Backend
from router.service import TandemService
from router.validation import Limits, RequestValidator

logger = logging.getLogger(__name__)

SERVICE_NAME = tandem_service_pb2.DESCRIPTOR.services_by_name["Tandem"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class RouterServer:
    """Owns the grpc.aio server, the health poller and the backend's lifetime."""

    def __init__(self, backend: Backend, config: RouterConfig | None = None,
                 options: list[tuple[str, object]] | None = None) -> None:
        self.backend = backend
        self.config = config or RouterConfig()
        self._options = options or []
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._health_task: asyncio.Task | None = None
        self.service: TandemService | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Start the backend, then listen; return the bound port (useful with grpc_port=0)."""
        cfg = self.config
        await self.backend.start()
        info = await self.backend.model_info()
        validator = RequestValidator(Limits.from_model_info(info, cfg.max_prompt_chars),
                                     self.backend.tokenizer.encode)
        self.service = TandemService(self.backend, validator,
                                     request_timeout_s=cfg.request_timeout_s,
                                     max_inflight=cfg.max_inflight)
        server = grpc.aio.server(options=self._options)
        tandem_service_pb2_grpc.add_TandemServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = f"{cfg.host}:{cfg.grpc_port}"
        self.port = server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot bind the router to {address}")
        await self._set_health(await self._backend_healthy())
        await server.start()
        self._server = server
        self._health_task = asyncio.create_task(self._poll_health(), name="router-health")
        logger.info("router serving %s on %s:%d", info.model, cfg.host, self.port)
        return self.port

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting, let running streams end within ``grace`` s, close the backend."""
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace)
            self._server = None
        await self.backend.close()

    async def wait(self) -> None:
        """Block until the server terminates."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _backend_healthy(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.backend.health(), self.config.health_poll_s))
        except Exception:  # a failing health probe means not serving, whatever the cause
            logger.warning("backend health probe failed", exc_info=True)
            return False

    async def _set_health(self, ok: bool) -> None:
        status = _SERVING if ok else _NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    async def _poll_health(self) -> None:
        last = None
        while True:
            ok = await self._backend_healthy()
            if ok != last:
                logger.info("backend health: %s", "serving" if ok else "not serving")
                await self._set_health(ok)
                last = ok
            await asyncio.sleep(self.config.health_poll_s)
