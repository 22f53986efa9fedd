"""The prefill worker (a Ray actor in the prefill pool).

For each request: find the longest cached prefix (own block cache, then the global store,
if fetching beats recomputing), prefill the rest in chunks, sample the first token, then
export the KV, encode it and ship it to the assigned decode worker, and hand newly
computed full chunks to the store's bounded write-back queue.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

from typing import TYPE_CHECKING

from engine.config import EngineConfig
from engine.driver import EngineDriver, EngineFailed, exit_on_fatal
from engine.load import LoadReporter
from engine.sampling_params import SamplingParams
from kv_transfer.config import KVTransferConfig
from kv_transfer.store.config import StoreConfig
from kv_transfer.transports.ray_source import AsyncRayKVSource
from prefill_worker.messages import PrefillRequest, PrefillResult, StoreOutcome
from prefill_worker.prefix import PrefixFetcher
from tandem_common.worker_load import WorkerLoad, current_node

if TYPE_CHECKING:
    from engine.llm_engine import LLMEngine
    from engine.kv_export import SequenceKV

logger = logging.getLogger(__name__)

_GROUP_FETCH_KEEP_S = 5.0     # a fork group's shared prefix fetch stays this long for late samples
_CANCELLED_KEEP_S = 30.0      # a cancelled transfer's tombstone, when the request has no deadline
SPEED_WINDOW_TOKENS = 512     # prompt tokens computed before the prefill speed is measured anew


class PrefillAborted(RuntimeError):
    """The engine aborted a prompt it could not place (the router retries another worker)."""


class PrefillWorker(AsyncRayKVSource):
    def __init__(self, worker_id: str, engine_config: EngineConfig, kv: KVTransferConfig,
                 store: StoreConfig | None = None):
        self.worker_id = worker_id
        self.incarnation = uuid.uuid4().hex[:12]
        # The model runtime (torch) loads here, in the actor: importing this module is
        # torch-free, so the router process can create the pool from this class.
        from engine.llm_engine import LLMEngine
        from kv_transfer.handoff import KVSender

        self.engine = LLMEngine(engine_config)
        # The prefill speed (tokens, seconds): measured once at start, then from the engine's
        # own counters (``_measure_speed``).
        self.prefill_tokens, self.prefill_s = _measure_prefill(self.engine)
        self._speed_mark = (0, 0.0)     # (prompt tokens computed, engine busy s) at the last measure
        self.driver = EngineDriver(self.engine, worker_id, on_fatal=exit_on_fatal)
        # KV exported on the engine thread right after the step that prefilled it (request id
        # -> SequenceKV) for the requests a ``_prefill`` waits for (``_awaiting``), taken by it.
        self._awaiting: set[str] = set()
        self._exported: dict[str, SequenceKV] = {}
        self.driver.add_observer(self._export_parked)
        # Layer-wise streaming: the decode worker pulls from this actor (the Ray transport).
        self.sender = KVSender(self.engine.kv_layout, kv, streaming=kv.transport == "ray")
        self.prefix = PrefixFetcher(self.engine, store)
        self.reporter = LoadReporter(worker_id, self.incarnation, "prefill", with_hashes=True,
                                     node=current_node())
        self._sending: set[asyncio.Task] = set()
        self._group_fetches: dict[tuple, list] = {}     # fork group's fetch -> [future, samples left]
        logger.info("%s ready (incarnation %s)", worker_id, self.incarnation)

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    async def prefill(self, req: PrefillRequest) -> PrefillResult:
        """Prefill, and ship the KV to ``req.decode_worker``. With ``req.transfer_id`` the
        decode worker was told at admission and already waits for that transfer: when no KV
        will be sent (the request ended at its first token, or this failed), the transfer is
        cancelled so the wait ends at once."""
        try:
            result = await self._prefill(req)
        except BaseException as exc:
            self._cancel_transfer(req, f"prefill failed: {type(exc).__name__}")
            raise
        if result.kv_handle is None:
            self._cancel_transfer(req, "the request ended at its first token")
        return result

    def _cancel_transfer(self, req: PrefillRequest, reason: str) -> None:
        if req.transfer_id:
            from kv_transfer.transports.ray_source import BOARD
            BOARD.cancel(req.transfer_id, reason, req.deadline or time.time() + _CANCELLED_KEEP_S)

    async def _prefill(self, req: PrefillRequest) -> PrefillResult:
        rid = req.request_id
        params = SamplingParams.from_dict(req.sampling)
        t0 = time.perf_counter()
        if params.prompt_logprobs is None:
            prefix_kv, store = await self._fetch_prefix(req)
        else:   # prompt logprobs need every prompt position computed
            prefix_kv, store = None, StoreOutcome()
        queue = self.driver.subscribe(rid)
        added = False
        self._awaiting.add(rid)
        try:
            await self.driver.call(lambda e: e.add_request(rid, req.prompt_token_ids, params, prefill_only=True,
                                                           cached_prefix_kv=prefix_kv,
                                                           cache_salt=req.cache_salt,
                                                           output_len=req.output_len,
                                                           output_text_offset=req.output_text_offset,
                                                           fork_group=req.fork_group,
                                                           fork_size=req.fork_size))
            added = True
            timeout = None if req.deadline is None else max(0.0, req.deadline - time.time())
            async with asyncio.timeout(timeout):   # not wait_for: see router/backends/ray_pools._call
                out = await queue.get()
            if isinstance(out, BaseException):
                added = False    # the engine is gone, and the request with it
                raise EngineFailed(f"the engine failed: {type(out).__name__}: {out}")
            if not out.new_token_ids:   # the engine gave up on it (no KV blocks): another worker may not
                added = False
                raise PrefillAborted(f"{self.worker_id} could not prefill request {rid} "
                                     f"({out.finish_reason}: no KV blocks for its prompt)")
            seq_kv = self._exported.pop(rid, None)
        except BaseException:
            self._exported.pop(rid, None)   # exported, then cancelled: its blocks are back already
            if added:
                await asyncio.shield(self.driver.call(lambda e: e.abort(rid)))
            raise
        finally:
            self._awaiting.discard(rid)
            self.driver.unsubscribe(rid)
        compute_s = time.perf_counter() - t0
        timings = {"store_ms": store.store_ms, "prefill_ms": 1000 * compute_s}
        result = PrefillResult(rid, self.worker_id, out.token_ids[-1], out.new_text, out.finish_reason,
                               out.num_cached_tokens, timings_ms=timings, store=store,
                               first_logprobs=out.new_logprobs, prompt_logprobs=out.prompt_logprobs)
        if out.finished:
            return result
        if seq_kv is None:   # the observer's export failed (the driver logged it): try once more
            seq_kv = await self.driver.call(lambda e: _export_and_release(e, rid))
        self.prefix.write_back(req.prompt_token_ids, seq_kv.kv, req.cache_salt)
        t1 = time.perf_counter()
        handoff = await asyncio.to_thread(self.sender.open, seq_kv, req.codec or None, req.deadline,
                                          req.transfer_id)
        if handoff.streaming:   # the decode worker starts receiving while we encode
            task = asyncio.get_running_loop().create_task(self._send_in_background(rid, handoff))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        else:
            result.kv_bytes = handoff.run()
        result.kv_handle = handoff.descriptor
        timings["ship_ms"] = 1000 * (time.perf_counter() - t1)
        return result

    def _export_parked(self, outputs) -> None:
        """A step observer, on the engine thread: export and release every sequence this step
        parked (prefilled, waiting for export) that a ``_prefill`` waits for, before the
        engine starts its next step. Asked for afterwards through ``driver.call``, the export
        waited for that whole next step, under load a queued prompt's prefill, and the first
        token and the KV hand-off with it."""
        from engine.sequence import SequenceStatus
        for out in outputs:
            if out.request_id not in self._awaiting:
                continue
            seq = self.engine.requests.get(out.request_id)
            if seq is not None and seq.status is SequenceStatus.PARKED:
                self._exported[out.request_id] = _export_and_release(self.engine, out.request_id)

    async def _fetch_prefix(self, req: PrefillRequest):
        """The prompt's cached prefix (``PrefixFetcher.fetch``). The samples of one request
        (``fork_size`` > 1) share one fetch, so they reach the engine together and its fork
        group computes their prompt once."""
        if req.fork_size <= 1:
            return await self.prefix.fetch(req.prompt_token_ids, req.cache_salt, self.prefill_tokens_per_s)
        # Keyed by what the fetch depends on too: only the same prompt and salt may share it.
        key = (req.fork_group, req.cache_salt, hash(tuple(req.prompt_token_ids)))
        entry = self._group_fetches.get(key)
        if entry is None:
            fut = asyncio.ensure_future(self.prefix.fetch(req.prompt_token_ids, req.cache_salt,
                                                          self.prefill_tokens_per_s))
            entry = self._group_fetches[key] = [fut, req.fork_size]
            # Dropped once every sample has it, at once if it failed (a retry fetches afresh),
            # and after a while regardless (a sample that never comes must not keep it).
            fut.add_done_callback(lambda f: (f.cancelled() or f.exception() is not None)
                                  and self._group_fetches.pop(key, None))
            asyncio.get_running_loop().call_later(_GROUP_FETCH_KEEP_S, self._group_fetches.pop, key, None)
        entry[1] -= 1
        if entry[1] <= 0:
            self._group_fetches.pop(key, None)
        return await asyncio.shield(entry[0])

    async def _send_in_background(self, request_id: str, handoff) -> None:
        try:
            await asyncio.to_thread(handoff.run)
        except Exception as exc:   # the stream was aborted: the receiver sees the error
            logger.warning("request %s: KV send failed: %s", request_id, exc)

    def _measure_speed(self, computed: int, busy: float) -> None:
        """The prefill speed anew once ``SPEED_WINDOW_TOKENS`` more prompt tokens were computed:
        those tokens over the engine's busy time meanwhile (the load report's counters).
        Throughput, not one request's time (which, in a batch or behind a queue, counts its
        wait as if it were compute)."""
        tokens, seconds = computed - self._speed_mark[0], busy - self._speed_mark[1]
        if tokens >= SPEED_WINDOW_TOKENS and seconds > 0:
            self.prefill_tokens, self.prefill_s = tokens, seconds
            self._speed_mark = (computed, busy)

    async def load(self, since_incarnation: str = "", since_version: int = 0) -> WorkerLoad:
        """Load figures, and the prefix-cache index as a delta from ``since_version`` (the
        version the caller holds of this incarnation's index; anything else: the whole set)."""
        load = await self.reporter.report(self.driver, since_incarnation, since_version, 0.0, self.prefix.stats())
        self._measure_speed(*self.reporter.counters)
        load.prefill_tokens_per_s = self.prefill_tokens_per_s
        return load

    async def ping(self) -> str:
        return self.incarnation

    def shutdown(self) -> None:
        self.prefix.close()
        self.driver.stop()


def _measure_prefill(engine: LLMEngine) -> tuple[int, float]:
    """Warm the kernels and measure prefill speed once, so the store's fetch-or-recompute
    controller has a real figure before the first request."""
    n = min(256, engine.max_model_len - 1)
    tokens = [i % engine.model_config.vocab_size for i in range(1, n + 1)]
    engine.prompt_logits(tokens)
    t0 = time.perf_counter()
    engine.prompt_logits(tokens)
    return n, time.perf_counter() - t0


def _export_and_release(engine: LLMEngine, request_id: str):
    try:
        return engine.export_kv(request_id)
    finally:
        engine.release(request_id)
