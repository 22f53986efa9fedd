"""The ``tandem.v1.Tandem`` gRPC servicer: validate, admit, stream from the backend.

Every request is validated before the backend is touched. The effective deadline is the
earliest of the gRPC deadline, the request's ``deadline_ms`` and the router's
``request_timeout_s``, so a client never waits forever even when a backend hangs. When
the client leaves, the handler task is cancelled and the backend's generator is closed,
which aborts the request on its worker.
"""
from __future__ import annotations

import asyncio
import logging
import time

import grpc

from protos.tandem.v1 import generate_pb2, info_pb2, tandem_service_pb2_grpc
from router import convert
from router.backend import Backend
from router.errors import (
    DuplicateRequest, Overloaded, RequestTimedOut, RouterError, status_of,
)
from router.validation import RequestValidator

logger = logging.getLogger(__name__)

# Text prompts longer than this are tokenized off the event loop.
_INLINE_TOKENIZE_CHARS = 8192


class TandemService(tandem_service_pb2_grpc.TandemServicer):
    """Implements Generate, GetModelInfo and GetClusterInfo over a ``Backend``."""

    def __init__(self, backend: Backend, validator: RequestValidator, *,
                 request_timeout_s: float, max_inflight: int) -> None:
        self._backend = backend
        self._validator = validator
        self._request_timeout_s = request_timeout_s
        self._max_inflight = max_inflight
        self._inflight: set[str] = set()

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet finished."""
        return len(self._inflight)

    async def Generate(self, request: generate_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> None:
        now = time.monotonic()
        request_id = ""
        admitted = False
        try:
            raw = convert.raw_request_from_proto(request)
            if raw.prompt_text is not None and len(raw.prompt_text) > _INLINE_TOKENIZE_CHARS:
                req = await asyncio.to_thread(self._validator.validate, raw, now)
            else:
                req = self._validator.validate(raw, now)
            request_id = req.request_id
            req.deadline = self._deadline(now, req.deadline, context)
            if request_id in self._inflight:
                raise DuplicateRequest(f"request {request_id!r} is already in flight")
            if len(self._inflight) >= self._max_inflight:
                raise Overloaded(f"{len(self._inflight)} requests in flight, the limit is "
                                 f"{self._max_inflight}")
            self._inflight.add(request_id)
            admitted = True
            await self._stream(req, context)
        except RouterError as exc:
            self._set_status(context, exc, request_id)
        except asyncio.CancelledError:
            logger.debug("request %s cancelled by the client", request_id)
            raise
        except Exception as exc:  # a backend bug must not kill the server
            logger.exception("request %s failed", request_id)
            self._set_status(context, exc, request_id)
        finally:
            if admitted:
                self._inflight.discard(request_id)

    async def _stream(self, req, context: grpc.aio.ServicerContext) -> None:
        events = self._backend.generate(req)
        loop = asyncio.get_running_loop()
        # asyncio.timeout_at takes the loop's clock; req.deadline is time.monotonic().
        when = loop.time() + (req.deadline - time.monotonic())
        try:
            async with asyncio.timeout_at(when):
                async for event in events:
                    await context.write(convert.event_to_proto(req.request_id, event))
        except TimeoutError:
            raise RequestTimedOut(f"request {req.request_id} passed its deadline") from None
        finally:
            await events.aclose()

    def _deadline(self, now: float, requested: float | None, context) -> float:
        candidates = [now + self._request_timeout_s]
        if requested is not None:
            candidates.append(requested)
        remaining = context.time_remaining()
        if remaining is not None:
            candidates.append(now + remaining)
        return min(candidates)

    @staticmethod
    def _set_status(context, exc: BaseException, request_id: str) -> None:
        code, details, trailing = status_of(exc)
        if code is grpc.StatusCode.INTERNAL:
            logger.error("request %s: %s", request_id, details)
        else:
            logger.debug("request %s: %s %s", request_id, code.name, details)
        context.set_code(code)
        context.set_details(details)
        if trailing:
            context.set_trailing_metadata(trailing)

    async def GetModelInfo(self, request: info_pb2.GetModelInfoRequest,
                           context: grpc.aio.ServicerContext) -> info_pb2.ModelInfo:
        try:
            return convert.model_info_to_proto(await self._backend.model_info())
        except Exception as exc:
            code, details, _ = status_of(exc)
            await context.abort(code, details)

    async def GetClusterInfo(self, request: info_pb2.GetClusterInfoRequest,
                             context: grpc.aio.ServicerContext) -> info_pb2.ClusterInfo:
        try:
            return convert.cluster_info_to_proto(await self._backend.cluster_info())
        except Exception as exc:
            code, details, _ = status_of(exc)
            await context.abort(code, details)
