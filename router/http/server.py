"""The OpenAI-compatible HTTP server (aiohttp.web) beside gRPC, and the metrics listener.

Routes (docs/openai.md, ``GET /openapi.json``): ``POST /v1/completions``,
``POST /v1/chat/completions`` (SSE when ``stream: true``), ``GET /v1/models[/{id}]``,
vLLM's ``POST /tokenize`` and ``POST /detokenize`` (these need ``Authorization: Bearer
<key>`` when auth is on, checked before the body is read), and the open ``GET /health``,
``GET /version``, ``GET /metrics`` (Prometheus, as on the metrics port) and
``GET /openapi.json``. Every request goes through
the same ``Gateway`` as gRPC. A client that disconnects cancels its handler
(``handler_cancellation``), which aborts the request and frees its KV.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl

from aiohttp import web

from router.auth import Principal, bearer_token
from router.errors import RequestTimedOut, RouterError
from router.gateway import Gateway
from router.http.errors import HttpError, error_body, response_for
from router.http import openapi
from router.http.generation import Generation
from router.http.openai_api import (OpenAIRequest, parse_chat, parse_completion, parse_detokenize,
                                    parse_tokenize)
from router.metrics import CONTENT_TYPE, RouterMetrics

logger = logging.getLogger(__name__)

OPENAPI_PATH = openapi.PATH          # the committed copy of what openapi.build() generates
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_HEALTH_TIMEOUT_S = 2.0
_STATUS_NAMES = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied",
                 404: "not_found", 413: "resource_exhausted"}


class _Site:
    """An aiohttp app on one port (TLS when ``ssl_context`` is set); ``start`` returns the port."""
    _runner: web.AppRunner
    ssl_context: ssl.SSLContext | None
    port: int | None = None

    async def start(self, host: str, port: int) -> int:
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context).start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()


class HttpServer(_Site):
    """Serves the OpenAI API over ``gateway``; ``start()`` returns the bound port."""

    def __init__(self, gateway: Gateway, max_body_bytes: int, chat_template: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.gateway, self.max_body_bytes = gateway, max_body_bytes
        self.chat_template, self.ssl_context = chat_template, ssl_context
        self.openapi = openapi.build()
        app = web.Application(client_max_size=max_body_bytes, middlewares=[self._errors])
        app.router.add_get("/health", self.health)
        app.router.add_get("/openapi.json", self.openapi_doc)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model:.+}", self.model)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/detokenize", self.detokenize)
        app.router.add_get("/version", self.version)
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                                     shutdown_timeout=1.0)
        self.port: int | None = None


    # -- middleware and helpers ----------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except asyncio.CancelledError:
            raise
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            self._count(exc.status)
            return response_for(exc)
        except (HttpError, RouterError) as exc:
            return response_for(exc, chat=request.path.endswith("/chat/completions"))
        except Exception as exc:  # a bug: answer 500 in OpenAI's shape, keep serving
            logger.exception("HTTP %s %s failed", request.method, request.path)
            return response_for(exc)

    def _count(self, status: int) -> None:
        self.gateway.metrics.request("http").done(_STATUS_NAMES.get(status, f"http_{status}"))

    def _principal(self, request: web.Request) -> Principal:
        return self.gateway.authenticate(bearer_token(request.headers.get("Authorization")), "http")

    async def _body(self, request: web.Request) -> object:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise HttpError(413, f"request body too large: {request.content_length} bytes, the "
                            f"limit is {self.max_body_bytes}")
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise HttpError(413, f"request body too large: the limit is {self.max_body_bytes} "
                            "bytes") from None
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            raise HttpError(400, "the request body is not valid JSON") from None
        if _SURROGATE_ESCAPE.search(data):       # JSON may escape a lone UTF-16 surrogate
            try:
                json.dumps(body, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise HttpError(400, "the request body holds a lone surrogate (\\ud800-\\udfff "
                                "escape without its pair): not valid Unicode text") from None
        return body

    def _parse(self, request: web.Request, body: object, chat: bool) -> OpenAIRequest:
        info = self.gateway.info
        parsed = parse_chat(body, info.model, self.chat_template) if chat \
            else parse_completion(body, info.model)
        raw = parsed.raw
        raw.request_id = request.headers.get("X-Request-Id", "")
        raw.tenant = request.headers.get("X-Tandem-Tenant", "")
        deadline = request.headers.get("X-Tandem-Deadline-Ms")
        if deadline is not None:
            if not deadline.isdigit() or len(deadline) > 12:
                raise HttpError(400, "X-Tandem-Deadline-Ms must be a whole number of ms",
                                param="X-Tandem-Deadline-Ms")
            raw.deadline_ms = int(deadline)
        return parsed

    # -- routes ---------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        try:
            ok = bool(await asyncio.wait_for(self.gateway.backend.health(), _HEALTH_TIMEOUT_S))
        except Exception:   # a failing probe means not serving, whatever the cause
            ok = False
        if ok:
            return web.json_response({"status": "ok"})
        body = error_body(503, "no healthy backend", "service_unavailable_error")
        body["status"] = "unavailable"
        return web.json_response(body, status=503)

    async def openapi_doc(self, request: web.Request) -> web.Response:
        return web.json_response(self.openapi)

    def _model_entry(self) -> dict:
        info = self.gateway.info
        return {"id": info.model, "object": "model", "created": 0, "owned_by": "tandem",
                "max_model_len": info.max_model_len, "vocab_size": info.vocab_size}

    async def models(self, request: web.Request) -> web.Response:
        self._principal(request)
        return web.json_response({"object": "list", "data": [self._model_entry()]})

    async def model(self, request: web.Request) -> web.Response:
        self._principal(request)
        name = request.match_info["model"]
        if name != self.gateway.info.model:
            raise HttpError(404, f"model {name[:128]!r} does not exist", param="model",
                            code="model_not_found")
        return web.json_response(self._model_entry())

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's ``/tokenize``: ``prompt`` (or chat ``messages``) to token ids, as the router
        tokenizes a request (``add_special_tokens``, default true: BOS as for a completion)."""
        self._principal(request)
        body = await self._body(request)
        tokenizer = self.gateway.backend.tokenizer
        text, add_bos = parse_tokenize(body, self.chat_template)
        ids = await asyncio.to_thread(tokenizer.encode, text, add_bos)
        return web.json_response({"count": len(ids), "max_model_len": self.gateway.info.max_model_len,
                                  "tokens": ids})

    async def detokenize(self, request: web.Request) -> web.Response:
        """vLLM's ``/detokenize``: ``tokens`` (ids in the vocabulary) to text."""
        self._principal(request)
        ids = parse_detokenize(await self._body(request), self.gateway.info.vocab_size)
        text = await asyncio.to_thread(self.gateway.backend.tokenizer.decode, ids)
        return web.json_response({"prompt": text})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": _version()})

    async def metrics(self, request: web.Request) -> web.Response:
        body = await self.gateway.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            return await self._serve(request, chat)
        except RequestTimedOut as exc:
            if request.headers.get("X-Tandem-Deadline-Ms") is None:
                raise
            # the client's own time budget ran out: a client error, not the server's
            raise HttpError(408, str(exc), code="deadline_exceeded",
                            err_type="timeout_error") from None

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        principal = self._principal(request)
        try:
            parsed = self._parse(request, await self._body(request), chat)
        except HttpError as exc:
            self._count(exc.status)
            raise
        except RouterError:
            self._count(400)
            raise
        generation = Generation(self.gateway, parsed, principal, chat)
        if parsed.stream:
            return await generation.stream(request)
        return await generation.whole()


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("tandem-serve")
    except metadata.PackageNotFoundError:   # running from a source tree that is not installed
        return "unknown"


class MetricsServer(_Site):
    """``GET /metrics`` (Prometheus text format) on its own port; TLS like the rest."""

    def __init__(self, metrics: RouterMetrics, ssl_context: ssl.SSLContext | None = None) -> None:
        self.metrics, self.ssl_context = metrics, ssl_context
        app = web.Application()
        app.router.add_get("/metrics", self.scrape)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self.port: int | None = None

    async def scrape(self, request: web.Request) -> web.Response:
        body = await self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

