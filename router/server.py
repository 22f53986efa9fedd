"""The router's gRPC server: Tandem service, health and reflection on one ``grpc.aio`` server.

    server = RouterServer(backend, RouterConfig(grpc_port=0))
    port = await server.start()      # the backend is started too
    ...
    await server.stop()

The health service reports ``SERVING`` for ``""`` and ``tandem.v1.Tandem`` while
``backend.health()`` is true, polled every ``health_poll_s``. Beside gRPC, the same
``Gateway`` (auth, limits, admission, metrics) serves the OpenAI-compatible HTTP API on
``http_port`` and Prometheus metrics on ``metrics_port`` when those are set; TLS from
``router.tls`` covers all three.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from router.config import RouterConfig, SLOConfig
from protos.tandem.v1 import tandem_service_pb2
from router import logging_context
from router.auth import build_authenticator
from router.backend import Backend
from router.gateway import Gateway, build_gateway
from router.http.chat import chat_template_of
from router.http.server import HttpServer, MetricsServer
from router.service import TandemService, add_to_server
from router.tls import grpc_credentials, load_tls, ssl_context
from router.validation import Limits, RequestValidator

logger = logging.getLogger(__name__)

SERVICE_NAME = tandem_service_pb2.DESCRIPTOR.services_by_name["Tandem"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class RouterServer:
    """Owns the grpc.aio server, the health poller and the backend's lifetime."""

    def __init__(self, backend: Backend, config: RouterConfig | None = None,
                 options: list[tuple[str, object]] | None = None,
                 slo: SLOConfig | None = None) -> None:
        self.backend = backend
        self.config = config or RouterConfig()
        self.slo = slo or SLOConfig()
        self._options = options or []
        self.gateway: Gateway | None = None
        self.http: HttpServer | None = None
        self.metrics_server: MetricsServer | None = None
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._health_task: asyncio.Task | None = None
        self.service: TandemService | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Start the backend, then listen; return the bound port (useful with grpc_port=0)."""
        cfg = self.config
        logging_context.install()
        auth = build_authenticator(cfg.auth, cfg.host)   # config errors before anything starts
        tls = load_tls(cfg.tls)
        await self.backend.start()
        info = await self.backend.model_info()
        validator = RequestValidator(Limits.from_model_info(info, cfg.max_prompt_chars),
                                     self.backend.tokenizer.encode)
        self.gateway = build_gateway(self.backend, validator, info, cfg, self.slo, auth)
        self.service = TandemService(self.gateway)
        size = cfg.limits.max_message_bytes
        # No SO_REUSEPORT: a port another process listens on is an error, not a shared port.
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", size),
                                          ("grpc.so_reuseport", 0), *self._options])
        add_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = f"{cfg.host}:{cfg.grpc_port}"
        self.port = (server.add_secure_port(address, grpc_credentials(tls)) if tls
                     else server.add_insecure_port(address))
        if not self.port:
            raise OSError(f"cannot bind the router to {address}")
        await self._set_health(await self._backend_healthy())
        await server.start()
        self._server = server
        self._health_task = asyncio.create_task(self._poll_health(), name="router-health")
        try:
            await self._start_http(tls)
        except BaseException:
            await self.stop(grace=0)
            raise
        logger.info("router serving %s: gRPC %s:%d, HTTP %s, metrics %s, TLS %s", info.model,
                    cfg.host, self.port, self.http_port or "off", self.metrics_port or "off",
                    "on" if tls else "off")
        return self.port

    async def _start_http(self, tls) -> None:
        cfg = self.config
        ctx = ssl_context(tls) if tls else None
        if cfg.http_port is not None:
            self.http = HttpServer(self.gateway, cfg.limits.max_body_bytes,
                                   chat_template_of(self.backend.tokenizer), ctx)
            self.http_port = await self.http.start(cfg.host, cfg.http_port)
        if cfg.metrics_port is not None:
            self.metrics_server = MetricsServer(self.gateway.metrics, ctx)
            self.metrics_port = await self.metrics_server.start(cfg.host, cfg.metrics_port)

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting, let running streams end within ``grace`` s, close the backend."""
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for listener in (self.http, self.metrics_server):
            if listener is not None:
                await listener.stop()
        self.http = self.metrics_server = None
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace)
            self._server = None
        if self.gateway is not None:    # a shared limiter's Redis connections
            with contextlib.suppress(Exception):
                await self.gateway.limiter.close()
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
