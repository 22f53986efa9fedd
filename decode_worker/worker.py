"""The decode worker (a Ray actor in the decode pool; also the colocated worker).

It imports shipped KV into its paged pool, decodes in a continuous batch, and publishes
each step's tokens for all its requests to an ``Outbox`` the router long-polls. In the
colocated role it also computes prompts itself (``submit``), which is the baseline every
disaggregation comparison needs; a decode worker does that when asked to recover a request,
or to take a prompt the busy prefill pool would queue (the router's prefill overflow,
``router/backends/overflow.py``).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Container
from concurrent.futures import Future, ThreadPoolExecutor

from decode_worker.messages import DecodeStart, FullRequest, StreamEvent
from decode_worker.outbox import Outbox
from typing import TYPE_CHECKING

from engine.config import EngineConfig
from engine.driver import EngineDriver, exit_on_fatal
from engine.load import LoadReporter
from engine.sampling_params import SamplingParams
from kv_transfer.config import KVTransferConfig
from kv_transfer.errors import KVTransferFailed
from tandem_common.worker_load import WorkerLoad, current_node

if TYPE_CHECKING:
    from engine.llm_engine import LLMEngine
    from engine.outputs import RequestOutput

logger = logging.getLogger(__name__)

REAP_INTERVAL_S = 0.25
RECEIVE_THREADS = 256     # KV receives waiting for a prefill (blocked, not computing)
ABORTED_KEPT = 4096       # recently aborted request ids (a KV arriving for one is dropped)
RESUME_KEYS_KEPT = 65536  # recent requests a resuming router may find (replay)


class DecodeWorker:
    """Args:
        worker_id, engine_config: the actor's name and the engine it builds.
        kv: the ``kv_transfer:`` settings its ``KVReceiver`` uses (decode role).
        role: "decode" (KV arrives from prefill workers) or "colocated" (computes prompts).
        engine: an engine already built (the in-process server); ``engine_config`` is unused.
        on_fatal: runs when an engine step fails; a pool worker exits so Ray restarts it.
        driver: an engine driver already running ``engine`` (a worker that also prefills over
            the same engine: ``cluster.flex_worker``); ``on_fatal`` is then unused.
        skip_ids: request ids whose steps are not streamed here (that same worker's
            prefill-only requests: their first token goes back with the prefill's result).
    """

    def __init__(self, worker_id: str, engine_config: EngineConfig | None, kv: KVTransferConfig,
                 role: str = "decode", *, engine: LLMEngine | None = None,
                 on_fatal: Callable[[BaseException], None] | None = exit_on_fatal,
                 driver: EngineDriver | None = None, skip_ids: Container[str] = ()):
        self.worker_id, self.role = worker_id, role
        self.incarnation = uuid.uuid4().hex[:12]
        if engine is None:
            # The model runtime (torch) loads here, in the actor: importing this module is
            # torch-free, so the router process can create the pool from this class.
            from engine.llm_engine import LLMEngine
            engine = LLMEngine(engine_config)
        self.engine = engine
        self.driver = driver or EngineDriver(self.engine, worker_id, on_fatal=on_fatal)
        self._skip = skip_ids
        self.receiver = None
        if role == "decode":   # the colocated role never receives KV
            from kv_transfer.handoff import KVReceiver
            self.receiver = KVReceiver(self.engine.kv_layout, kv)
        self.outbox = Outbox()
        # The prefix-cache index is reported in the colocated role only (routing by prefix).
        self.reporter = LoadReporter(worker_id, self.incarnation, role, with_hashes=role == "colocated",
                                     node=current_node())
        self.deadlines: dict[str, float] = {}
        self._handed_over: set[str] = set()     # imported, no token decoded here yet
        self._aborted: OrderedDict[str, float] = OrderedDict()   # request -> when (recent ones)
        self._resume_keys: OrderedDict[str, str] = OrderedDict()  # request -> key (replay)
        self._receive_pool = ThreadPoolExecutor(RECEIVE_THREADS, thread_name_prefix="kv-receive")
        self.receiving = 0                      # KV receives in flight (waiting or moving)
        self.driver.add_observer(self._on_step)
        self._reaper: asyncio.Task | None = None
        logger.info("%s ready (incarnation %s)", worker_id, self.incarnation)

    def _ensure_loop(self) -> None:
        if self._reaper is None:
            self.outbox.bind(asyncio.get_running_loop())
            self._reaper = asyncio.get_running_loop().create_task(self._reap_expired())

    def _on_step(self, outputs: list[RequestOutput]) -> None:
        # Urgent (a lingering poll returns at once): a request's first tokens, the first this
        # worker decodes after a hand-off (the client waits on the KV hand-off for it), or its end.
        if self._skip:
            outputs = [o for o in outputs if o.request_id not in self._skip]
            if not outputs:
                return
        urgent = False
        for o in outputs:
            if o.finished:
                self.deadlines.pop(o.request_id, None)
                self._handed_over.discard(o.request_id)
                urgent = True
            elif len(o.new_token_ids) == len(o.token_ids):
                urgent = True
            elif o.request_id in self._handed_over:
                self._handed_over.discard(o.request_id)
                urgent = True
        self.outbox.put([StreamEvent(o.request_id, o.new_token_ids, o.new_text, o.finish_reason,
                                     o.num_cached_tokens, o.new_logprobs,
                                     o.prompt_logprobs if len(o.new_token_ids) == len(o.token_ids) else None,
                                     len(o.token_ids) - len(o.new_token_ids), o.text_offset)
                         for o in outputs], urgent)

    # -- requests ------------------------------------------------------------------------
    async def start(self, req: DecodeStart) -> int:
        """Receive and import a request's KV; returns the KV bytes received. The router may
        call this at admission, with a descriptor of a transfer the prefill worker opens only
        when its prompt is computed: the receive waits for it on a thread of its own pool
        (a blocked wait, no CPU). If the router aborted the request meanwhile, the KV that
        arrives is dropped (``KVTransferFailed``)."""
        self._ensure_loop()
        began = time.monotonic()
        self._remember(req.request_id, req.resume_key)
        self.receiving += 1
        try:
            seq_kv, nbytes = await asyncio.get_running_loop().run_in_executor(
                self._receive_pool, self.receiver.receive, req.kv_handle, req.deadline)
        finally:
            self.receiving -= 1
        if self._aborted.get(req.request_id, -1.0) >= began:
            raise KVTransferFailed(f"request {req.request_id} was aborted while its KV was on its "
                                   "way; the KV is dropped")
        if req.deadline is not None:
            self.deadlines[req.request_id] = req.deadline
        self._handed_over.add(req.request_id)
        try:
            await self.driver.call(lambda e: e.import_kv(seq_kv))
        except BaseException:
            self._handed_over.discard(req.request_id)
            raise
        return nbytes

    async def submit(self, req: FullRequest) -> None:
        """Compute the prompt here and decode (colocated role, recovery, or prefill overflow)."""
        self._ensure_loop()
        params = SamplingParams.from_dict(req.sampling)
        if req.deadline is not None:
            self.deadlines[req.request_id] = req.deadline
        self._remember(req.request_id, req.resume_key)
        await self.driver.call(lambda e: e.add_request(req.request_id, req.prompt_token_ids, params,
                                                       cache_salt=req.cache_salt, output_len=req.output_len,
                                                       output_text_offset=req.output_text_offset,
                                                       fork_group=req.fork_group, fork_size=req.fork_size))

    async def poll(self, cursor: int, timeout_s: float = 1.0,
                   linger_s: float = 0.0) -> tuple[str, int, list[StreamEvent]]:
        """(incarnation, new cursor, events after ``cursor``); a changed incarnation tells the
        router this actor restarted and every request it held is gone. ``linger_s``: see
        ``Outbox.events_after`` (coalesces steady streaming into fewer round trips)."""
        self._ensure_loop()
        cursor, events = await self.outbox.events_after(cursor, timeout_s, linger_s)
        return self.incarnation, cursor, events

    def _remember(self, request_id: str, key: str) -> None:
        if key:
            self._resume_keys[request_id] = key
            self._resume_keys.move_to_end(request_id)
            while len(self._resume_keys) > RESUME_KEYS_KEPT:
                self._resume_keys.popitem(last=False)

    async def replay(self, request_id: str, key: str) -> tuple[str, list[StreamEvent]] | None:
        """(incarnation, the request's retained events) when this worker holds or held the
        request under ``key`` (the router's digest of its tenant, prompt and sampling, so a
        resume must be the same request); None otherwise, or once it was aborted here. The
        events cover what the outbox retains (``RETAIN_S``); each says where it starts in
        the completion, so the router can tell what is missing."""
        if not key or self._resume_keys.get(request_id) != key:
            return None
        return self.incarnation, self.outbox.events_of(request_id)

    async def abort(self, request_id: str) -> bool:
        return await asyncio.wrap_future(self.abort_nowait(request_id))

    def abort_nowait(self, request_id: str) -> Future:
        """Queue the abort on the engine thread (ahead of any later call); the future says
        whether the request was still held."""
        self.deadlines.pop(request_id, None)
        self._handed_over.discard(request_id)
        self._resume_keys.pop(request_id, None)
        self._aborted[request_id] = time.monotonic()
        self._aborted.move_to_end(request_id)
        while len(self._aborted) > ABORTED_KEPT:
            self._aborted.popitem(last=False)
        return self.driver.submit(lambda e: self._abort_on_engine(e, request_id))

    def _abort_on_engine(self, engine: LLMEngine, request_id: str) -> bool:
        if engine.abort(request_id) is None:
            return False
        self.outbox.put([StreamEvent(request_id, [], "", "abort")], urgent=True)
        return True

    async def _reap_expired(self) -> None:
        """Deadline expiry frees KV here even if the router is gone."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            now = time.time()
            for rid in [r for r, d in self.deadlines.items() if d < now]:
                logger.info("request %s passed its deadline; aborting", rid)
                await self.abort(rid)

    # -- health and load -------------------------------------------------------------------
    async def load(self, since_incarnation: str = "", since_version: int = 0) -> WorkerLoad:
        """Load figures; in the colocated role also the prefix-cache index as a delta from
        ``since_version`` (see ``PrefillWorker.load``)."""
        return await self.reporter.report(self.driver, since_incarnation, since_version)

    async def receives_in_flight(self) -> int:
        """KV receives started and not ended (an early one waits for its prefill)."""
        return self.receiving

    async def ping(self) -> str:
        return self.incarnation

    def shutdown(self) -> None:
        """Stop the engine thread and the deadline reaper (callable from any thread)."""
        if self._reaper is not None:
            self._reaper.get_loop().call_soon_threadsafe(self._reaper.cancel)
        self._receive_pool.shutdown(wait=False, cancel_futures=True)
        self.driver.stop()
