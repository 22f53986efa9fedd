"""The router's backend over the Ray pools: routing, the two-phase flow, and recovery.

Disaggregated: prefill on one pool (first token streamed at once), KV shipped to a decode
worker (told at admission with the streaming Ray transport, so it waits for the KV while the
prompt is computed), tokens streamed back through that worker's batched long-poll. Colocated: one
worker does both. A prefill failure is retried on another worker; a decode worker that
dies mid-stream has its request re-prefilled (prompt + tokens so far) on a healthy pair
and the stream continues with no token repeated or missing.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from router.backends.fork_homes import ForkHomes
from router.backends.overflow import PrefillOverflow
from router.backends.resume import StreamGap, complete_reason, find_holder, resume_key, unseen
from router.backends.stream_hub import StreamHub, WorkerGone
from router.backends.worker_registry import WorkerRegistry
from decode_worker.messages import DecodeStart, FullRequest, StreamEvent
from tandem_common.hashing import chunk_hashes
from engine.config import EngineConfig
from engine.model_info import load_tokenizer
from prefill_worker.messages import PrefillRequest, PrefillResult
from tandem_common.worker_load import WorkerLoad
from router.admission import Capacity
from router.backend import Backend, Tokenizer
from router.config import RouterConfig
from router.errors import BackendFailure, NoHealthyWorker, RequestTimedOut, WorkerFailed
from router.messages import (ClusterInfo, Finished, FinishReason, GenerateEvent, GenerateRequest,
                             ModelInfo, PoolInfo, TokenDelta, Usage, WorkerHealth, WorkerInfo)
from router.policies import RoutingContext, WorkerView, create_policy
from kv_transfer.transports.base import new_transfer_id
from kv_transfer.transports.ray_transport import early_descriptor

logger = logging.getLogger(__name__)

MAX_RECOVERIES = 3
EARLY_WAIT_S = 600.0      # an early KV wait's bound for a request with no deadline


class _Recover(Exception):
    """The decode side was lost; re-prefill what we have on a healthy pair."""


class RayPoolsBackend(Backend):
    """Args:
        router: the router's settings (policies, health poll, stream interval).
        model: the engine settings every worker runs (name, block size, context, dtype).
        pools: role -> {worker name: Ray actor handle}.
        codecs: codec names a request may ask for; ``default_codec`` when it names none.
        colocated: one pool ("colocated") does prefill and decode.
        tenant_sharing: False salts each tenant's prefix hashes apart.
        early_decode: tell the decode worker at admission (the KV transport streams from the
            prefill actor, ``kv_transfer.transport: ray``), so it waits for the KV while the
            prompt is computed.
        switchable: the workers can switch between prefill and decode (the cluster's
            rebalancing): each serves from the pool its load reports name, and every one of
            them is polled for streams (those of its old role finish after a switch).
    """

    def __init__(self, router: RouterConfig, model: EngineConfig, pools: dict[str, dict[str, object]],
                 codecs: list[str], *, default_codec: str = "raw", colocated: bool = False,
                 tenant_sharing: bool = False, early_decode: bool = False, switchable: bool = False,
                 tpot_ms: float = 100.0):
        self.model = model
        self.colocated = colocated
        self.mode = "colocated" if colocated else "disaggregated"
        self.stream_role = "colocated" if self.colocated else "decode"
        self.switchable = switchable and not colocated
        self.registry = WorkerRegistry(pools, poll_s=router.health_poll_s, switchable=self.switchable)
        self.stream_roles = ("prefill", "decode") if self.switchable else (self.stream_role,)
        self.hub = StreamHub(self.registry, self.stream_roles, router.stream_interval_s)
        self._tokenizer, self.model_cfg = load_tokenizer(model.model)
        self.prefill_policy = create_policy(router.prefill_policy)
        self.decode_policy = create_policy(router.decode_policy)
        self.codecs = codecs
        self.default_codec = default_codec
        self.tenant_sharing = tenant_sharing
        self.block_size = model.block_size
        self.kv_bytes_sent: dict[str, int] = {}   # codec -> encoded KV bytes received by decode
        self.fork_homes = ForkHomes()             # the samples of one request go to one worker
        self.early_decode = early_decode and not colocated
        self.overflow = PrefillOverflow(router.prefill_overflow and not colocated and not self.switchable,
                                        tpot_ms, router.overflow_max_stall_tpot,
                                        room_tokens=model.max_num_batched_tokens)
        self._collecting: set[asyncio.Task] = set()

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    async def start(self) -> None:
        await self.registry.refresh_once()
        self.registry.start()
        self.hub.start()

    async def close(self) -> None:
        await self.hub.stop()
        await self.registry.stop()

    # -- generate ------------------------------------------------------------------------
    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateEvent]:
        rid = request.request_id
        salt = b"" if self.tenant_sharing else request.tenant.encode()
        sampling = request.sampling.to_dict()
        progress = _Progress(key=resume_key(request, sampling))
        generated = progress.token_ids
        usage = Usage(prompt_tokens=len(request.prompt_token_ids))
        holder = None
        if request.resume is not None:     # a broken stream: go on after what the client has
            generated.extend(request.resume.token_ids)
            progress.text_chars = request.resume.text_chars
            reason = complete_reason(request, self.model_cfg.eos_token_ids)
            if reason is not None:
                usage.completion_tokens = len(generated)
                yield Finished(reason, usage)
                return
            holder = await find_holder([v for role in self.stream_roles for v in self.registry.healthy(role)],
                                       rid, progress.key)
            logger.info("request %s resumes after %d tokens: %s", rid, len(generated),
                        f"held by {holder.name}" if holder else "held nowhere; re-prefilling")
        recoveries = 0
        while True:
            # A recovery re-prefills what was generated as the tail of the prompt and tells the
            # engine so: max_tokens, stop strings and held-back text carry on where they were.
            prompt = request.prompt_token_ids + generated
            try:
                stream = (self._follow(request, holder, usage, progress) if holder is not None else
                          self._attempt(request, rid, prompt, sampling, salt, usage, progress))
                holder = None
                async for event in stream:
                    yield event
                return
            except _Recover as exc:
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise WorkerFailed(f"request {rid}: decode failed {recoveries} times ({exc})") from None
                logger.warning("request %s: %s; re-prefilling %d tokens (%d prompt + %d generated; "
                               "recovery %d)", rid, exc, len(request.prompt_token_ids) + len(generated),
                               len(request.prompt_token_ids), len(generated), recoveries)

    async def _follow(self, request: GenerateRequest, view: WorkerView, usage: Usage,
                      progress: _Progress) -> AsyncIterator[GenerateEvent]:
        """Relay a resumed request from the worker that holds it: what it retained, then its
        live events, each cut to what the client lacks (``resume.unseen``). Subscribing
        before reading what it retained leaves no event between the two."""
        rid = request.request_id
        queue = self.hub.subscribe(rid, view.name)
        view.inflight += 1
        usage.decode_worker = view.name
        finished = False
        try:
            got = await self._call(request, view, view.handle.replay.remote(rid, progress.key), recover=True)
            if got is None:
                raise _Recover(f"{view.name} no longer holds it")
            async for event in self._relay(request, usage, progress, queue, got[1], self.colocated):
                yield event
            finished = True
        finally:
            view.inflight -= 1
            self.hub.unsubscribe(rid)
            if not finished:
                _fire_and_forget(view.handle.abort.remote(rid))

    async def _relay(self, request: GenerateRequest, usage: Usage, progress: _Progress,
                     queue: asyncio.Queue, retained: list[StreamEvent] = (),
                     computes_prompt: bool = False) -> AsyncIterator[GenerateEvent]:
        """The stream worker's events (``retained`` first, then ``queue``) as deltas, until
        the finish. Each is cut to what was not sent yet, so an event seen twice is sent once;
        one that starts past what was sent means a hole: the request is recovered."""
        generated = progress.token_ids
        pending = list(retained)
        while True:
            item = pending.pop(0) if pending else await self._next(request, queue)
            if isinstance(item, WorkerGone):
                raise _Recover(f"decode worker {item.worker} lost ({item.reason})")
            try:
                item = unseen(item, len(generated), progress.text_chars)
            except StreamGap as exc:
                raise _Recover(f"its stream has a hole ({exc})") from None
            if item is None:
                continue
            if computes_prompt and not generated and item.token_ids:
                usage.cached_prompt_tokens = item.num_cached_tokens
            for ev in self._emit(request, usage, progress, item.token_ids, item.text, item.finish_reason,
                                 item.logprobs, item.prompt_logprobs):
                yield ev
            if item.finish_reason is not None:
                return

    async def _attempt(self, request: GenerateRequest, rid: str, prompt: list[int], params: dict,
                       salt: bytes, usage: Usage, progress: _Progress) -> AsyncIterator[GenerateEvent]:
        generated = progress.token_ids
        ctx = RoutingContext(rid, len(prompt), chunk_hashes(prompt, self.block_size, salt), self.block_size)
        deadline = _epoch(request.deadline)
        # The samples of one request (n > 1) share a worker, and its prefill, unless recovering.
        group = request.fork_group if request.fork_size > 1 and not generated else ""
        fork = {"fork_group": group, "fork_size": request.fork_size if group else 1}
        decoder = self._pick(self.stream_role, self.decode_policy, ctx,
                             group=group if self.colocated else "")
        queue = self.hub.subscribe(rid, decoder.name)
        decoder.inflight += 1
        finished = False
        early = _EarlyStart()
        local = 0     # prompt tokens this decode worker computes itself (overflow), until its first token
        try:
            if not self.colocated and not generated and not group and self.overflow.enabled and \
                    await self._place(request, decoder, len(prompt), ctx):
                local = len(prompt)
                self.overflow.sent(decoder.name, local)
                self.overflow.overflowed += 1
            if self.colocated or local:
                if self.colocated:
                    self.registry.expect_cached(decoder, ctx.block_hashes)
                await self._call(request, decoder, decoder.handle.submit.remote(
                    FullRequest(rid, prompt, params, salt, deadline, len(generated),
                                progress.text_chars, **fork, resume_key=progress.key)), recover=True)
                usage.decode_worker = usage.prefill_worker = decoder.name
            else:
                res = await self._prefill(request, rid, prompt, params, salt, decoder, ctx, deadline,
                                          progress, fork, early)
                usage.prefill_worker, usage.decode_worker = res.worker_id, decoder.name
                if not generated:
                    usage.cached_prompt_tokens = res.num_cached_tokens
                for ev in self._emit(request, usage, progress, [res.first_token_id], res.first_text,
                                     res.finish_reason, res.first_logprobs, res.prompt_logprobs):
                    yield ev
                if res.finish_reason is not None:
                    finished = True
                    return
                started, early.ref = early.ref, None     # told at admission, or now
                if started is None:
                    started = decoder.handle.start.remote(DecodeStart(rid, res.kv_handle, deadline,
                                                                      progress.key))
                nbytes = await self._call(request, decoder, started, recover=True)
                codec = request.codec or self.default_codec
                self.kv_bytes_sent[codec] = self.kv_bytes_sent.get(codec, 0) + int(nbytes or 0)
            async for ev in self._relay(request, usage, progress, queue,
                                        computes_prompt=self.colocated or bool(local)):
                if local and isinstance(ev, TokenDelta) and ev.token_ids:
                    self.overflow.done(decoder.name, local)
                    local = 0
                yield ev
            finished = True
        finally:
            if local:
                self.overflow.done(decoder.name, local)
            decoder.inflight -= 1
            if group and self.colocated:
                self.fork_homes.release(self.stream_role, group)
            self.hub.unsubscribe(rid)
            if early.ref is not None:
                self._abandon(early, "the request ended before its KV was sent")
            if not finished:
                _fire_and_forget(decoder.handle.abort.remote(rid))

    async def _place(self, request: GenerateRequest, decoder: WorkerView, n: int, ctx: RoutingContext) -> bool:
        """PrefillOverflow.place within the request's deadline: True to compute the prompt on
        ``decoder``. Nothing awaits between its return and the caller's ``sent``."""
        try:
            async with asyncio.timeout(_remaining(request)):
                return await self.overflow.place(lambda: self.registry.healthy("prefill"), decoder, n,
                                                 ctx.block_hashes[0] if ctx.block_hashes else None)
        except TimeoutError:
            raise RequestTimedOut(f"request {request.request_id} passed its deadline") from None

    async def _prefill(self, request, rid, prompt, params, salt, decoder: WorkerView, ctx, deadline,
                       progress: _Progress, fork: dict, early: _EarlyStart) -> PrefillResult:
        """The first token from a prefill worker (a failed one is retried on another). With
        ``early_decode`` the decode worker is told at the same time (``early``): it waits for
        the KV transfer while the prompt is computed, so the hand-off adds no router round
        trips after prefill."""
        tried: set[str] = set()
        group = fork["fork_group"]
        while True:
            worker = self._pick("prefill", self.prefill_policy, ctx, exclude=tried, group=group)
            self.registry.expect_cached(worker, ctx.block_hashes)
            worker.inflight += 1
            self.overflow.sent(worker.name, len(prompt))
            transfer_id = ""
            if self.early_decode:
                transfer_id = new_transfer_id(rid)
                descriptor = early_descriptor(transfer_id, deadline or time.time() + EARLY_WAIT_S, worker.handle)
                early.ref = decoder.handle.start.remote(DecodeStart(rid, descriptor, deadline, progress.key))
                early.worker, early.transfer_id, early.deadline = worker, transfer_id, descriptor.deadline
            ref = worker.handle.prefill.remote(PrefillRequest(
                rid, prompt, params, salt, request.codec, decoder.name, deadline,
                len(progress.token_ids), progress.text_chars, **fork, transfer_id=transfer_id))
            try:
                res = await self._call(request, worker, ref, recover=False)
                if res.finish_reason is not None and early.ref is not None:
                    self._abandon(early, "the request ended at its first token")
                return res
            except WorkerFailed as exc:
                tried.add(worker.name)
                if early.ref is not None:
                    self._abandon(early, "prefill failed")
                logger.warning("request %s: prefill on %s failed (%s); retrying elsewhere", rid, worker.name, exc)
            finally:
                worker.inflight -= 1
                self.overflow.done(worker.name, len(prompt))
                if group:
                    self.fork_homes.release("prefill", group)

    async def _call(self, request: GenerateRequest, worker: WorkerView, ref, recover: bool):
        """Await a worker call within the request's deadline, mapping failures to types."""
        import ray
        try:
            # asyncio.timeout rather than wait_for here and below: Python 3.11's wait_for can
            # swallow a client's cancellation that lands as the result arrives.
            async with asyncio.timeout(_remaining(request)):
                return await asyncio.wrap_future(ref.future())
        except TimeoutError:
            ray.cancel(ref)
            raise RequestTimedOut(f"request {request.request_id} passed its deadline") from None
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            self.registry.mark_failed(worker.name)
            self.hub.fail_worker(worker.name, type(exc).__name__) if recover else None
            if recover:
                raise _Recover(f"worker {worker.name} failed: {type(exc).__name__}") from None
            raise WorkerFailed(f"worker {worker.name} failed: {type(exc).__name__}") from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            if isinstance(cause, ValueError):   # validation let through what a worker refuses: a bug
                raise BackendFailure(f"worker {worker.name} refused the request: {cause}") from None
            raise WorkerFailed(f"worker {worker.name}: {type(cause).__name__}: {cause}") from None

    async def _next(self, request: GenerateRequest, queue: asyncio.Queue) -> StreamEvent | WorkerGone:
        try:
            async with asyncio.timeout(_remaining(request)):
                return await queue.get()
        except TimeoutError:
            raise RequestTimedOut(f"request {request.request_id} passed its deadline") from None

    def _emit(self, request, usage: Usage, progress: _Progress, token_ids: list[int], text: str,
              finish_reason: str | None, logprobs: list | None = None,
              prompt_logprobs: list | None = None):
        generated = progress.token_ids
        progress.text_chars += len(text)
        if token_ids:
            if not generated and usage.ttft_ms == 0.0:
                usage.ttft_ms = 1000 * (time.monotonic() - request.arrival_time)
            index = len(generated)
            generated.extend(token_ids)
            # Prompt logprobs go out once, with the first token (not again after a recovery).
            yield TokenDelta(list(token_ids), text, index, logprobs, prompt_logprobs if index == 0 else None)
        elif text:
            yield TokenDelta([], text, len(generated))
        if finish_reason is not None:
            usage.completion_tokens = len(generated)
            yield Finished(FinishReason(finish_reason), usage)

    def _abandon(self, early: _EarlyStart, reason: str) -> None:
        """An early start that will get no KV: the prefill worker's board cancels the transfer
        (the decode worker's wait ends at once; a no-op if prefill already did), and the
        start's result is collected in the background."""
        ref, early.ref = early.ref, None
        if early.worker is not None:
            with contextlib.suppress(Exception):      # the prefill worker may be gone
                _fire_and_forget(early.worker.handle.kv_transfer_cancel.remote(
                    early.transfer_id, reason, early.deadline))

        async def collect() -> None:
            try:
                await ref
            except Exception as exc:                   # the expected end of an abandoned wait
                logger.debug("abandoned KV start ended: %s", type(exc).__name__)
        task = asyncio.get_running_loop().create_task(collect())
        self._collecting.add(task)
        task.add_done_callback(self._collecting.discard)

    def _pick(self, role: str, policy, ctx: RoutingContext, exclude: set[str] = frozenset(),
              group: str = "") -> WorkerView:
        """The policy's pick among the healthy ``role`` workers; with a fork ``group``, the
        worker its other samples went to (``ForkHomes``; the caller releases it)."""
        workers = self.registry.healthy(role, exclude)
        if not workers and self.switchable:
            # Every worker serves either role: none announcing this one (two routers' switches
            # crossed) is no reason to refuse a request.
            workers = [v for r in self.stream_roles for v in self.registry.healthy(r, exclude)]
        if not workers:
            raise NoHealthyWorker(f"no healthy {role} worker")
        if group:
            return self.fork_homes.pick(role, group, workers, lambda ws: policy.pick(ws, ctx))
        return policy.pick(workers, ctx)

    # -- info ----------------------------------------------------------------------------
    async def model_info(self) -> ModelInfo:
        m = self.model_cfg
        eos = m.eos_token_ids[0] if m.eos_token_ids else None
        max_len = min(m.max_position_embeddings, self.model.max_model_len or m.max_position_embeddings)
        dtype = self.model.dtype or m.torch_dtype      # what the workers' engines load
        return ModelInfo(self.model.model, m.vocab_size, max_len, self.block_size, dtype,
                         m.num_layers, m.num_kv_heads, m.head_dim, eos, list(self.codecs),
                         self.default_codec, self.mode)

    async def cluster_info(self) -> ClusterInfo:
        pools = []
        for role, views in self.registry.views.items():
            workers = []
            for v in views.values():
                workers.append(WorkerInfo(v.name, WorkerHealth.HEALTHY if v.healthy else WorkerHealth.UNHEALTHY,
                                          node=v.last_load.node if v.last_load is not None else "",
                                          running_requests=v.running, waiting_requests=v.queue_depth,
                                          free_kv_blocks=v.free_kv_blocks, total_kv_blocks=v.total_kv_blocks,
                                          load=float(v.load), restarts=self.registry.restarts.get(v.name, 0)))
            pools.append(PoolInfo(role, workers))
        return ClusterInfo(self.mode, pools, await self.health())

    async def health(self) -> bool:
        roles = ["colocated"] if self.colocated else ["prefill", "decode"]
        return all(self.registry.healthy(r) for r in roles)

    # -- hooks read by router.admission and router.metrics -----------------------------------
    def admission_capacity(self) -> Capacity:
        """Prefill speed the healthy prefill workers measured, and the two pools' sizes."""
        speeds = [] if self.colocated else [
            v.last_load.prefill_tokens_per_s for v in self.registry.healthy("prefill")
            if v.last_load is not None and v.last_load.prefill_tokens_per_s > 0]
        first_role = self.stream_role if self.colocated else "prefill"
        firsts = [v.last_load for v in self.registry.healthy(first_role) if v.last_load is not None]
        streams = [v.last_load for v in self.registry.healthy(self.stream_role) if v.last_load is not None]
        return Capacity(sum(speeds) if speeds else None,
                        max(1, len(self.registry.healthy(self.stream_role))),
                        max(1, len(self.registry.healthy(first_role))),
                        sum(w.queued_prompt_tokens for w in firsts) if firsts else None,
                        sum(w.running for w in streams) if streams else None)

    def worker_reports(self) -> list[tuple[str, WorkerLoad]]:
        """(worker, last WorkerLoad) for every worker that has reported."""
        return [(v.name, v.last_load) for pool in self.registry.views.values()
                for v in pool.values() if v.last_load is not None]


@dataclass(slots=True)
class _Progress:
    """What one request has streamed so far, across recoveries (and the key a router
    resuming it must show its workers: ``resume.resume_key``)."""
    token_ids: list[int] = field(default_factory=list)
    text_chars: int = 0
    key: str = ""


def _remaining(request: GenerateRequest) -> float | None:
    return None if request.deadline is None else max(0.0, request.deadline - time.monotonic())


def _epoch(deadline_monotonic: float | None) -> float | None:
    return None if deadline_monotonic is None else time.time() + (deadline_monotonic - time.monotonic())


@dataclass(slots=True)
class _EarlyStart:
    """A decode worker's ``start`` sent at admission, not yet awaited, and the transfer it
    waits for on ``worker`` (the prefill worker)."""
    ref: object = None
    worker: WorkerView | None = None
    transfer_id: str = ""
    deadline: float = 0.0


def _fire_and_forget(ref) -> None:
    """Abort calls whose result nobody needs (the worker may already be gone)."""
    del ref
