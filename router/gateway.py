"""The one generate path behind both protocols (gRPC and OpenAI-compatible HTTP).

Authenticate → tenant from the key → validate (``router.validation``) → edge limits →
deadline → duplicate check → per-tenant rate/concurrency → SLO admission → stream from
the backend into the protocol's ``sink`` under the deadline → metrics, logs. Each
protocol only converts its request into a ``RawRequest`` and events into its wire format.

Cancellation (the client left) arrives as ``CancelledError`` at the current ``await``;
the backend generator is closed in ``finally``, which aborts the request on its worker and
frees its KV blocks. Every early refusal happens before the backend is touched.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc

from router.config import LimitsConfig, RouterConfig, SLOConfig
from router.admission import AdmissionController, AdmissionRejected, Ticket, capacity_of
from router.auth import Authenticator, Principal, Unauthenticated
from router.backend import Backend
from router.convert import RawRequest
from router.errors import (DuplicateRequest, InvalidRequest, RequestTimedOut, RouterError,
                           WorkerFailed)
from router.logging_context import request_context
from router.messages import Finished, GenerateEvent, GenerateRequest, ModelInfo, TokenDelta
from router.metrics import RequestMetrics, RouterMetrics
from router.ratelimit import TenantLimiter
from router.validation import RequestValidator

logger = logging.getLogger(__name__)

Sink = Callable[[GenerateEvent], Awaitable[None]]
# Text prompts longer than this are tokenized off the event loop.
_INLINE_TOKENIZE_CHARS = 8192


class ClientGone(RouterError):
    """The client closed the connection while its response was being written."""
    code = grpc.StatusCode.CANCELLED


class Gateway:
    """Shared by TandemService (gRPC) and the HTTP server; one per RouterServer."""

    def __init__(self, backend: Backend, validator: RequestValidator, info: ModelInfo, *,
                 auth: Authenticator, admission: AdmissionController, limiter: TenantLimiter,
                 limits: LimitsConfig, metrics: RouterMetrics, request_timeout_s: float) -> None:
        self.backend, self.validator, self.info = backend, validator, info
        self.auth, self.admission, self.limiter = auth, admission, limiter
        self.limits, self.metrics = limits, metrics
        self.request_timeout_s = request_timeout_s
        self._inflight: set[str] = set()

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet finished."""
        return len(self._inflight)

    def authenticate(self, token: str | None, protocol: str) -> Principal:
        """The caller's principal; a failure is counted and raised (nothing else runs)."""
        try:
            return self.auth.authenticate(token)
        except Unauthenticated:
            self.metrics.request(protocol).done("unauthenticated")
            raise

    async def generate(self, raw: RawRequest, principal: Principal, sink: Sink, *,
                       protocol: str, remaining_s: float | None = None,
                       fill_max_tokens: bool = False,
                       on_request: Callable[[GenerateRequest], None] | None = None) -> Finished:
        """Serve one request, handing each event to ``sink``; return the Finished event.

        ``fill_max_tokens``: an unset ``max_tokens`` means "as many as fit the context"
        (OpenAI chat) instead of the engine default. ``on_request`` sees the validated
        request before admission (the HTTP layer learns the request id from it).
        Raises RouterError subclasses (AdmissionRejected carries a retry-after hint).
        """
        now = time.monotonic()
        m = self.metrics.request(protocol)
        status, ticket, lease, admitted, rid = "ok", None, None, False, raw.request_id or "-"
        try:
            raw.tenant = principal.tenant_for(raw.tenant)
            req = await self._validate(raw, now, fill_max_tokens)
            rid = req.request_id
            req.deadline = self._deadline(now, req.deadline, remaining_s)
            if on_request is not None:
                on_request(req)
            with request_context(rid, req.tenant):
                if rid in self._inflight:
                    raise DuplicateRequest(f"request {rid!r} is already in flight")
                lease = await self.limiter.acquire_async(req.tenant, principal.limits, request_id=rid,
                                                         resumed=req.resume is not None)
                ticket = self.admission.admit(rid, len(req.prompt_token_ids), req.fork_group,
                                              resumed=req.resume is not None)
                self._inflight.add(rid)
                admitted = True
                logger.debug("admitted (%s, %d prompt tokens, max_tokens %d)", protocol,
                             len(req.prompt_token_ids), req.sampling.max_tokens)
                return await self._stream(req, sink, m, ticket)
        except AdmissionRejected as exc:
            status = "resource_exhausted"
            m.rejected(exc.reason)
            logger.info("request %s refused: %s", rid, exc)
            raise
        except RouterError as exc:
            status = exc.code.name.lower()
            level = logging.ERROR if status == "internal" else logging.DEBUG
            logger.log(level, "request %s: %s %s", rid, exc.code.name, exc)
            raise
        except asyncio.CancelledError:
            # A client that hangs up once it has the whole result (a short call closing its
            # channel) cancels the clean-up, not the request.
            status = "ok" if m.delivered else "cancelled"
            logger.debug("request %s cancelled by the client", rid)
            raise
        except Exception:
            status = "internal"
            logger.exception("request %s failed", rid)
            raise
        finally:
            if admitted:
                self._inflight.discard(rid)
            if ticket is not None:
                ticket.release(m.tokens)
            if lease is not None:
                lease.release()
            m.done(status)

    async def _validate(self, raw: RawRequest, now: float, fill: bool) -> GenerateRequest:
        fill = fill and raw.max_tokens is None
        if fill:
            raw.max_tokens = 1
        if raw.prompt_text is not None and len(raw.prompt_text) > _INLINE_TOKENIZE_CHARS:
            req = await asyncio.to_thread(self.validator.validate, raw, now)
        else:
            req = self.validator.validate(raw, now)
        n_prompt = len(req.prompt_token_ids)
        cap = self.limits.max_prompt_tokens
        if cap is not None and n_prompt > cap:
            raise InvalidRequest("prompt", f"too long: {n_prompt} tokens, the limit is {cap}")
        cap = self.limits.max_tokens
        if fill:
            room = self.info.max_model_len - n_prompt
            req.sampling.max_tokens = max(1, room if cap is None else min(cap, room))
        elif cap is not None and req.sampling.max_tokens > cap:
            raise InvalidRequest("sampling.max_tokens", f"must be <= {cap}, got "
                                 f"{req.sampling.max_tokens}")
        return req

    def _deadline(self, now: float, requested: float | None, remaining_s: float | None) -> float:
        candidates = [now + self.request_timeout_s]
        if requested is not None:
            candidates.append(requested)
        if remaining_s is not None:
            candidates.append(now + remaining_s)
        return min(candidates)

    async def _stream(self, req: GenerateRequest, sink: Sink, m: RequestMetrics,
                      ticket: Ticket) -> Finished:
        events = self.backend.generate(req)
        loop = asyncio.get_running_loop()
        # asyncio.timeout_at takes the loop's clock; req.deadline is time.monotonic().
        when = loop.time() + (req.deadline - time.monotonic())
        finished: Finished | None = None
        try:
            async with asyncio.timeout_at(when):
                async for event in events:
                    delta = event if isinstance(event, TokenDelta) else event.delta
                    if delta is not None and delta.token_ids:
                        ticket.first_token() if m.first is None else ticket.token()
                        m.tokens_arrived(len(delta.token_ids))
                    if isinstance(event, Finished):
                        finished = event
                        m.finished(event.reason.value if hasattr(event.reason, "value")
                                   else str(event.reason), event.usage)
                        # The whole result is generated and handed to the transport: a client
                        # hanging up during this last write has it (a unary-style client
                        # closes its call as soon as it reads the final message).
                        m.delivered = True
                    await sink(event)
                    if finished is not None:
                        break
        except TimeoutError:
            raise RequestTimedOut(f"request {req.request_id} passed its deadline") from None
        finally:
            await events.aclose()
        if finished is None:
            raise WorkerFailed(f"request {req.request_id}: the backend ended the stream "
                               "without finishing it")
        return finished


def build_gateway(backend: Backend, validator: RequestValidator, info: ModelInfo,
                  cfg: RouterConfig, slo: SLOConfig, auth: Authenticator) -> Gateway:
    """A Gateway with its admission controller, tenant limiter and metrics from config."""
    admission = AdmissionController(cfg.admission, slo, cfg.max_inflight, capacity_of(backend))
    limiter = TenantLimiter(cfg.limits)
    if cfg.limits.shared_url:      # several routers: the limits hold for the cluster
        from router.shared_limits import SharedTenantLimiter
        limiter = SharedTenantLimiter(cfg.limits, cfg.limits.shared_url,
                                      lease_ttl_s=cfg.request_timeout_s + 30.0)
    return Gateway(backend, validator, info, auth=auth, admission=admission,
                   limiter=limiter, limits=cfg.limits,
                   metrics=RouterMetrics(backend, admission),
                   request_timeout_s=cfg.request_timeout_s)
