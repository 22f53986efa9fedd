"""``LocalBackend``: the colocated worker in this process, behind the router.

The worker is ``decode_worker.DecodeWorker`` in its "colocated" role: the same class the
Ray pool runs in ``mode: colocated``, here called directly instead of through an actor
handle. Its engine runs on the engine driver's thread; one pump task long-polls the worker's
outbox and hands each request its events. This is the single-process deployment and the
real backend of the SDK and router tests; it loads the model (and torch) in this process,
so the router of a cluster never uses it.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from engine.config import EngineConfig
from router.backend import Backend, Tokenizer, register_backend
from router.backends.resume import complete_reason
from router.errors import InvalidRequest, NoHealthyWorker, WorkerFailed
from router.messages import (
    ClusterInfo, Finished, FinishReason, GenerateEvent, GenerateRequest, ModelInfo, PoolInfo,
    TokenDelta, Usage, WorkerHealth, WorkerInfo,
)

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 1.0


@register_backend("local")
class LocalBackend(Backend):
    """Serves requests from one in-process colocated worker.

    Args:
        llm: an ``engine.LLM`` whose engine the worker drives; when None, the worker builds
            one from ``model_config`` in ``start()`` (off the event loop).
        model_config: used when ``llm`` is None.
        codecs: codec names a request may name (no KV moves in colocated mode; accepted
            so that clients written for the disaggregated cluster work unchanged).
        worker_id: reported as both prefill and decode worker.
        tenant_sharing: when False, each tenant's prefix-cache entries are salted apart.
    """

    def __init__(self, llm: Any = None, *, model_config: EngineConfig | None = None,
                 codecs: Sequence[str] = ("raw",), worker_id: str = "local-0",
                 tenant_sharing: bool = False) -> None:
        self._llm = llm
        self._model_config = model_config or EngineConfig()
        self._codecs = list(codecs)
        self.worker_id = worker_id
        self._tenant_sharing = tenant_sharing
        self._worker: Any = None
        self._pump: asyncio.Task | None = None
        self._queues: dict[str, asyncio.Queue] = {}
        self._failure: BaseException | None = None
        self._closed = False

    @property
    def engine(self) -> Any:
        """The engine the worker drives; call into it only through ``run_on_engine``."""
        if self._worker is None:
            raise NoHealthyWorker("the local engine is not started")
        return self._worker.engine

    @property
    def tokenizer(self) -> Tokenizer:
        if self._worker is None:
            raise NoHealthyWorker("the local engine is not started")
        return self._worker.engine.tokenizer

    async def start(self) -> None:
        if self._worker is not None:
            return
        from decode_worker.worker import DecodeWorker
        from kv_transfer.config import KVTransferConfig

        loop = asyncio.get_running_loop()

        def on_fatal(exc: BaseException) -> None:        # on the engine thread
            loop.call_soon_threadsafe(self._fail_all, exc)

        engine = None if self._llm is None else self._llm.engine
        self._worker = await asyncio.to_thread(
            DecodeWorker, self.worker_id, self._model_config, KVTransferConfig(), "colocated", engine=engine,
            on_fatal=on_fatal)
        self._pump = loop.create_task(self._pump_events())

    async def close(self) -> None:
        self._closed = True
        if self._pump is not None:
            # asyncio.wait, not ``await task``: awaiting a cancelled task re-raises its
            # CancelledError, which a suppress() here would also take from our own caller.
            self._pump.cancel()
            await asyncio.wait({self._pump})
        if self._worker is not None:
            await asyncio.to_thread(self._worker.shutdown)
        for q in self._queues.values():
            q.put_nowait(NoHealthyWorker("the local engine stopped"))

    async def run_on_engine(self, fn: Any) -> Any:
        """Run ``fn(engine)`` on the engine thread (engine calls are not thread-safe)."""
        if not await self.health():
            raise NoHealthyWorker("the local engine is not running")
        return await self._worker.driver.call(fn)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        if not await self.health():
            raise NoHealthyWorker("the local engine is not running")
        from decode_worker.messages import FullRequest

        rid = request.request_id
        salt = b"" if self._tenant_sharing else request.tenant.encode()
        usage = Usage(prompt_tokens=len(request.prompt_token_ids),
                      prefill_worker=self.worker_id, decode_worker=self.worker_id)
        # A resumed stream (its router died) is held by no engine of this process: its prompt
        # and the tokens the client has are computed again, and it goes on after them.
        have = request.resume.token_ids if request.resume is not None else []
        usage.completion_tokens = len(have)
        reason = complete_reason(request, self._worker.engine.eos_token_ids)
        if reason is not None:
            yield Finished(reason, usage)
            return
        events: asyncio.Queue = asyncio.Queue()
        self._queues[rid] = events
        held = False
        try:
            try:
                await self._worker.submit(FullRequest(
                    rid, request.prompt_token_ids + have, request.sampling.to_dict(), salt,
                    output_len=len(have),
                    output_text_offset=request.resume.text_chars if have else 0,
                    fork_group=request.fork_group, fork_size=request.fork_size))
            except ValueError as exc:   # the engine's refusal is the request's fault, not ours
                raise InvalidRequest("request", f"rejected by the engine: {exc}") from None
            except Exception as exc:
                raise _as_router_error(exc) from None
            held = True
            while True:
                item = await events.get()
                if isinstance(item, BaseException):
                    held = False      # the engine no longer holds it
                    raise _as_router_error(item)
                delta = None
                if item.token_ids or item.text:
                    if item.token_ids and usage.completion_tokens == 0:
                        usage.ttft_ms = (time.monotonic() - request.arrival_time) * 1000
                        usage.cached_prompt_tokens = item.num_cached_tokens
                    delta = TokenDelta(list(item.token_ids), item.text, usage.completion_tokens,
                                       item.logprobs, item.prompt_logprobs)
                    usage.completion_tokens += len(item.token_ids)
                if item.finish_reason is not None:
                    held = False
                    yield Finished(FinishReason(item.finish_reason), usage, delta)
                    return
                if delta is not None:
                    yield delta
        finally:
            self._queues.pop(rid, None)
            if held and self._worker is not None and self._worker.driver.alive:
                self._worker.abort_nowait(rid)

    async def _pump_events(self) -> None:
        """One long-poll of the worker's outbox, fanning each step's events out to requests.

        The pump is also the one that delivers an engine failure: ``_fail_all`` cancels its
        poll, and it first hands out every event the engine published before it failed (a
        cancelled poll has not moved the cursor), then the failure. Delivered at once
        instead, the failure would overtake deltas still in the outbox.
        """
        cursor = 0
        try:
            while not self._closed:   # also ends the loop should a cancellation be lost
                _, cursor, batch = await self._worker.poll(cursor, POLL_TIMEOUT_S)
                self._deliver(batch)
        except asyncio.CancelledError:
            if self._failure is None or self._closed:
                raise
            asyncio.current_task().uncancel()
            _, cursor, batch = await self._worker.poll(cursor, 0)
            self._deliver(batch)
            for q in self._queues.values():
                q.put_nowait(self._failure)

    def _deliver(self, batch: list) -> None:
        for event in batch:
            q = self._queues.get(event.request_id)
            if q is not None:
                q.put_nowait(event)

    def _fail_all(self, exc: BaseException) -> None:
        """On the event loop, when an engine step failed: new requests are refused at once
        (``health``), those in flight get their published events and then ``exc``."""
        if self._failure is not None:
            return
        self._failure = exc
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        else:
            for q in self._queues.values():
                q.put_nowait(exc)

    async def model_info(self) -> ModelInfo:
        if self._worker is None:
            raise NoHealthyWorker("the local engine is not started")
        engine = self._worker.engine
        cfg = engine.model_config
        eos = sorted(engine.eos_token_ids)
        return ModelInfo(
            model=engine.config.model, vocab_size=cfg.vocab_size,
            max_model_len=engine.max_model_len, block_size=engine.config.block_size,
            dtype=engine.kv_layout.dtype, num_layers=cfg.num_layers,
            num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
            eos_token_id=eos[0] if eos else None, codecs=list(self._codecs),
            default_codec=self._codecs[0] if self._codecs else "", mode="colocated")

    async def cluster_info(self) -> ClusterInfo:
        healthy = await self.health()
        worker = WorkerInfo(worker_id=self.worker_id, node=socket.gethostname(),
                            health=WorkerHealth.HEALTHY if healthy else WorkerHealth.UNHEALTHY,
                            device=str(self._worker.engine.loaded.device) if self._worker else "cpu")
        if healthy:
            load = await self._worker.load()
            worker.running_requests, worker.waiting_requests = load.running, load.queue_depth
            worker.free_kv_blocks, worker.total_kv_blocks = load.free_kv_blocks, load.total_kv_blocks
            worker.load = 1 - load.free_kv_blocks / load.total_kv_blocks if load.total_kv_blocks else 0.0
        return ClusterInfo(mode="colocated", pools=[PoolInfo("colocated", [worker])],
                           healthy=healthy)

    async def health(self) -> bool:
        return (not self._closed and self._worker is not None and self._failure is None
                and self._worker.driver.alive)


def _as_router_error(exc: BaseException) -> Exception:
    if isinstance(exc, (NoHealthyWorker, WorkerFailed, InvalidRequest)):
        return exc
    if isinstance(exc, ValueError):
        return InvalidRequest("request", f"rejected by the engine: {exc}")
    cause = exc
    from engine.driver import EngineFailed
    if isinstance(exc, EngineFailed) and exc.__cause__ is not None:
        cause = exc.__cause__
    return WorkerFailed(f"the local engine failed: {type(cause).__name__}: {cause}")
