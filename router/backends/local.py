"""``LocalBackend``: one in-process engine behind the router (the colocated mode).

The engine runs on its own thread (``EngineThread``); the event loop only moves
results. This is the single-process deployment and the real backend of the SDK and
router tests. It holds the model weights itself, so it is for colocated serving only.
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
from router.backends.engine_thread import Delivery, EngineThread
from router.errors import InvalidRequest, NoHealthyWorker, WorkerFailed
from router.messages import (
    ClusterInfo, Finished, FinishReason, GenerateEvent, GenerateRequest, ModelInfo, PoolInfo,
    TokenDelta, Usage, WorkerHealth, WorkerInfo,
)

logger = logging.getLogger(__name__)


class _PromptTokenizer:
    """Adapts the engine's tokenizer to the router's ``encode(text)`` (BOS added)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text)


def engine_kwargs(config: EngineConfig) -> dict[str, Any]:
    """``engine.LLM`` keyword arguments for an EngineConfig (device "auto": CUDA if present)."""
    device = config.resolved_device()
    kwargs = dict(model=config.model, dtype=config.dtype, device=device,
                  block_size=config.block_size, max_num_seqs=config.max_num_seqs,
                  max_num_batched_tokens=config.max_num_batched_tokens,
                  max_model_len=config.max_model_len, num_kv_blocks=config.num_kv_blocks,
                  enable_prefix_caching=config.enable_prefix_caching, seed=config.seed,
                  num_threads=config.num_threads, matmul_dtype=config.matmul_dtype)
    return kwargs


@register_backend("local")
class LocalBackend(Backend):
    """Serves requests from one in-process ``engine.LLM``.

    Args:
        llm: an ``engine.LLM`` to serve; when None, one is built from ``model_config`` in
            ``start()`` (off the event loop).
        model_config: used when ``llm`` is None.
        codecs: codec names a request may name (no KV moves in colocated mode; accepted
            so that clients written for the disaggregated cluster work unchanged).
        worker_id: reported as both prefill and decode worker.
        tenant_sharing: when False, each tenant's prefix-cache entries are salted apart.
    """

    def __init__(self, llm: Any = None, *, model_config: EngineConfig | None = None,
                 codecs: Sequence[str] = ("raw",), worker_id: str = "local-0",
                 tenant_sharing: bool = False) -> None:
        if llm is None and model_config is None:
            model_config = EngineConfig()
        self._llm = llm
        self._model_config = model_config
        self._codecs = list(codecs)
        self.worker_id = worker_id
        self._tenant_sharing = tenant_sharing
        self._thread: EngineThread | None = None
        self._queues: dict[str, asyncio.Queue] = {}
        self._closed = False

    @property
    def llm(self) -> Any:
        if self._llm is None:
            raise NoHealthyWorker("the local engine is not started")
        return self._llm

    @property
    def tokenizer(self) -> Tokenizer:
        return _PromptTokenizer(self.llm.tokenizer)

    async def start(self) -> None:
        if self._thread is not None:
            return
        if self._llm is None:
            from engine import LLM   # torch is imported only by a backend that needs it
            kwargs = engine_kwargs(self._model_config)
            self._llm = await asyncio.to_thread(lambda: LLM(**kwargs))
        self._thread = EngineThread(self._llm.engine, asyncio.get_running_loop(), self._deliver,
                                    name=f"engine-{self.worker_id}")
        self._thread.start()

    async def close(self) -> None:
        self._closed = True
        if self._thread is not None:
            await asyncio.to_thread(self._thread.stop)
        for q in self._queues.values():
            q.put_nowait(NoHealthyWorker("the local engine stopped"))

    async def run_on_engine(self, fn: Any) -> Any:
        """Run ``fn(engine)`` on the engine thread (engine calls are not thread-safe)."""
        if not await self.health():
            raise NoHealthyWorker("the local engine is not running")
        return await asyncio.wrap_future(self._thread.submit(fn))

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        if not await self.health():
            raise NoHealthyWorker("the local engine is not running")
        from engine.sampling_params import SamplingParams
        rid = request.request_id
        params = SamplingParams.from_dict(request.sampling.to_dict())
        salt = b"" if self._tenant_sharing else request.tenant.encode()
        results: asyncio.Queue = asyncio.Queue()
        self._queues[rid] = results
        self._thread.add(rid, request.prompt_token_ids, params, salt)
        finished = False
        index = 0
        ttft_ms = 0.0
        try:
            while True:
                item = await results.get()
                if isinstance(item, BaseException):
                    finished = True   # the engine no longer holds it
                    raise _as_router_error(item)
                if index == 0 and item.new_token_ids:
                    ttft_ms = (time.monotonic() - request.arrival_time) * 1000
                delta = None
                if item.new_token_ids or item.new_text:
                    delta = TokenDelta(list(item.new_token_ids), item.new_text, index)
                    index += len(item.new_token_ids)
                if item.finished:
                    finished = True
                    yield Finished(FinishReason(item.finish_reason), Usage(
                        prompt_tokens=len(item.prompt_token_ids),
                        cached_prompt_tokens=item.num_cached_tokens,
                        completion_tokens=len(item.token_ids), ttft_ms=ttft_ms,
                        prefill_worker=self.worker_id, decode_worker=self.worker_id), delta)
                    return
                if delta is not None:
                    yield delta
        finally:
            self._queues.pop(rid, None)
            if not finished and self._thread is not None:
                self._thread.abort(rid)

    def _deliver(self, batch: Delivery) -> None:
        for rid, item in batch:
            q = self._queues.get(rid)
            if q is not None:
                q.put_nowait(item)

    async def model_info(self) -> ModelInfo:
        engine = self.llm.engine
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
                            device=str(getattr(self._llm.engine.config, "device", "cpu"))
                            if self._llm else "cpu")
        if healthy:
            stats = await self.run_on_engine(_engine_load)
            worker.running_requests, worker.waiting_requests = stats[0], stats[1]
            worker.free_kv_blocks, worker.total_kv_blocks = stats[2], stats[3]
            worker.load = 1 - stats[2] / stats[3] if stats[3] else 0.0
        return ClusterInfo(mode="colocated", pools=[PoolInfo("colocated", [worker])],
                           healthy=healthy)

    async def health(self) -> bool:
        return not self._closed and self._thread is not None and self._thread.alive


def _engine_load(engine: Any) -> tuple[int, int, int, int]:
    sched = engine.scheduler
    return (len(sched.running), len(sched.waiting), engine.free_block_count(),
            engine.pool.num_blocks)


def _as_router_error(exc: BaseException) -> Exception:
    if isinstance(exc, (NoHealthyWorker, WorkerFailed, InvalidRequest)):
        return exc
    if isinstance(exc, ValueError):
        return InvalidRequest("request", f"rejected by the engine: {exc}")
    return WorkerFailed(f"the local engine failed: {type(exc).__name__}: {exc}")
