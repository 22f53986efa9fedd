"""The prefix cache client: what a prefill worker calls around each prefill.

    plan = client.plan(prompt_ids, salt, prefill_tokens_per_s)   # lookup + cost decision
    prefix_kv = client.fetch(plan)                               # None: compute everything
    ... prefill with cached_prefix_kv=prefix_kv, first token out ...
    client.write_back(prompt_ids, computed_kv, salt)             # never blocks

Around the store it adds the fetch-vs-recompute controller, a circuit breaker with a
background reconnect probe, the bounded asynchronous write-back and the counters.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import torch

from engine.kv_export import KVLayout
from kv_transfer.store.base import FetchSample, KVStore, StoreUnavailable, create_store
from kv_transfer.store.breaker import BreakerState, CircuitBreaker
from kv_transfer.store.config import StoreConfig
from kv_transfer.store.cost_model import CostModel
from kv_transfer.store.redis_store import check_kv
from kv_transfer.store.stats import FetchPlan, StoreStats
from kv_transfer.store.writeback import BoundedWriteBack

logger = logging.getLogger(__name__)


class PrefixCacheClient:
    """Fetch-or-recompute front of a ``KVStore``; owns the store unless told otherwise."""

    def __init__(self, store: KVStore, *, own_store: bool = True, safety: float = 1.25) -> None:
        self.store = store
        self.config: StoreConfig = store.config
        self.chunk_size = self.config.chunk_size
        lay = store.layout
        itemsize = getattr(torch, lay.dtype).itemsize
        self.cost = CostModel(lay.num_layers * 2 * lay.num_kv_heads * lay.head_dim * itemsize,
                              safety=safety)
        self._own_store = own_store
        self._write_errors_seen = store.write_errors()
        self._stats = StoreStats()
        self._lock = threading.Lock()
        self._local_while_open = False
        self._probe_stop = threading.Event()
        self._probe_thread: threading.Thread | None = None
        self.breaker = CircuitBreaker(self.config.breaker_failures, self.config.breaker_reset_s,
                                      on_change=self._breaker_changed)
        self.writeback = BoundedWriteBack(self._put, self.config.writeback_queue,
                                          self.config.writeback_max_bytes)
        if self.config.calibrate:
            self.calibrate()

    @classmethod
    def open(cls, config: StoreConfig, layout: KVLayout, **kwargs) -> "PrefixCacheClient":
        """Build the configured store and a client that owns it."""
        return cls(create_store(config, layout), **kwargs)

    # -- measurement ---------------------------------------------------------------
    def calibrate(self, large_chunks: int = 4) -> None:
        """Measure each tier's fixed cost and bandwidth with throw-away chunks."""
        for tier in ("local", "remote"):
            try:
                samples = [self.store.measure_fetch(tier, n) for n in (1, 1, large_chunks, large_chunks)]
            except StoreUnavailable:
                self.breaker.record_failure()
                logger.warning("store calibration of %s tier failed: redis unavailable", tier)
                continue
            if any(s is None for s in samples):
                if tier == "local":
                    self.cost.mark_absent(tier)
                continue
            small = min(samples[:2], key=lambda s: s.seconds)
            large = min(samples[2:], key=lambda s: s.seconds)
            self.cost.calibrate(tier, small, large)
        logger.info("store fetch costs measured: %s", self.cost.snapshot())

    # -- the request path ----------------------------------------------------------
    def plan(self, token_ids: Sequence[int], salt: bytes | str | None,
             prefill_tokens_per_s: float) -> FetchPlan:
        """Look the prompt up and decide how much of its prefix to fetch."""
        if prefill_tokens_per_s <= 0:
            raise ValueError(f"prefill_tokens_per_s must be > 0, got {prefill_tokens_per_s}")
        tokens = list(token_ids)
        # At least one prompt token is always computed: it yields the first token's logits.
        usable = ((len(tokens) - 1) // self.chunk_size) * self.chunk_size if tokens else 0
        plan = FetchPlan(tokens, salt, "skip", "", usable_tokens=usable,
                         prefill_tokens_per_s=prefill_tokens_per_s)
        with self._lock:
            self._stats.plans += 1
        if usable == 0:
            plan.reason = "prompt shorter than one chunk plus one token"
            return self._record(plan)
        if not self.breaker.allow() and not self._local_while_open:
            plan.reason = f"breaker {self.breaker.state.value}"
            return self._record(plan, breaker_skip=True)
        if not self.cost.best_case_wins(usable, prefill_tokens_per_s):
            plan.reason = "no hit of this length could beat recompute"
            return self._record(plan, lookup_skipped=True)
        started = time.perf_counter()
        try:
            hits = self.store.lookup_tiers(tokens[:usable], salt)
        except StoreUnavailable as exc:
            self._failure()
            with self._lock:
                self._stats.lookup_failures += 1
            plan.reason = f"store unavailable: {exc}"
            return self._record(plan)
        plan.lookup_s = time.perf_counter() - started
        self._timed_ok(plan.lookup_s)
        plan.hit_local, plan.hit_remote = hits.local, hits.remote
        if hits.total == 0:
            plan.decision, plan.reason = "miss", "no stored prefix"
            return self._record(plan)
        choice = self.cost.choose(hits, usable, prefill_tokens_per_s)
        plan.fetch_tokens, plan.fetch_local_tokens = choice.fetch_tokens, choice.fetch_local_tokens
        plan.est_fetch_s, plan.est_saving_s = choice.est_fetch_s, choice.est_saving_s
        plan.est_recompute_s = min(hits.total, usable) / prefill_tokens_per_s
        plan.inputs = {"local_fixed_s": choice.local_fixed_s,
                       "local_bytes_per_s": choice.local_bytes_per_s,
                       "remote_fixed_s": choice.remote_fixed_s,
                       "remote_bytes_per_s": choice.remote_bytes_per_s,
                       "bytes_per_token": float(self.cost.bytes_per_token),
                       "safety": self.cost.safety}
        if choice.fetch_tokens:
            plan.decision = "fetch"
            plan.reason = "fetch cheaper than recompute"
        else:
            plan.decision = "recompute"
            plan.reason = "recompute cheaper than fetch"
        return self._record(plan)

    def fetch(self, plan: FetchPlan) -> torch.Tensor | None:
        """The planned prefix KV ``[L, 2, n, H, D]`` (n may be shorter), or None."""
        if plan.decision != "fetch" or plan.fetch_tokens <= 0:
            return None
        started = time.perf_counter()
        try:
            kv = self.store.get(plan.token_ids, plan.fetch_tokens, plan.salt)
        except StoreUnavailable:
            self._failure()
            with self._lock:
                self._stats.fetch_failures += 1
            return None
        elapsed = time.perf_counter() - started
        got = 0 if kv is None else int(kv.shape[2])
        self._timed_ok(elapsed, per_bytes=got * self.cost.bytes_per_token)
        self._observe(plan, got, elapsed)
        with self._lock:
            self._stats.fetches += 1
            self._stats.fetched_tokens += got
            if got < plan.fetch_tokens:
                self._stats.fetch_shortfalls += 1
        if got < plan.fetch_tokens:
            logger.info("store fetch got %d of %d planned tokens; the rest is recomputed",
                        got, plan.fetch_tokens)
        return kv

    def write_back(self, token_ids: Sequence[int], kv: torch.Tensor,
                   salt: bytes | str | None = None) -> bool:
        """Queue the full chunks of freshly computed KV for the store; never blocks.

        ``kv`` covers ``token_ids[:kv.shape[2]]`` and must not be modified afterwards.
        Returns False if nothing was queued (no full chunk, breaker open, queue full).
        """
        check_kv(kv, self.store.layout, len(token_ids))
        n = (kv.shape[2] // self.chunk_size) * self.chunk_size
        if n == 0:
            return False
        if not self.breaker.allow() and not self._local_while_open:
            with self._lock:
                self._stats.writebacks_dropped += 1
            return False
        return self.writeback.submit(list(token_ids)[:n], kv[:, :, :n], salt)

    # -- internals -----------------------------------------------------------------
    def _put(self, token_ids: Sequence[int], kv: torch.Tensor, salt: bytes | str | None) -> None:
        started = time.perf_counter()
        try:
            self.store.put(token_ids, kv, salt)
        except StoreUnavailable:
            self._write_errors_seen = self.store.write_errors()
            self._failure()
            raise
        # The store may finish writes in the background (LMCache): their failures show
        # up in its counter by the next write-back.
        errors = self.store.write_errors()
        if errors > self._write_errors_seen:
            self._write_errors_seen = errors
            self._failure()
            return
        self._timed_ok(time.perf_counter() - started, per_bytes=kv.numel() * kv.element_size())

    def _observe(self, plan: FetchPlan, got: int, elapsed: float) -> None:
        if got <= 0:
            return
        bpt = self.cost.bytes_per_token
        local = min(plan.fetch_local_tokens, got)
        if local == got:
            self.cost.observe("local", FetchSample(got * bpt, elapsed))
        else:
            remote_s = elapsed - self.cost.estimate(local, 0)
            self.cost.observe("remote", FetchSample((got - local) * bpt, max(remote_s, 1e-6)))

    def _timed_ok(self, seconds: float, per_bytes: int = 0) -> None:
        # A remote call slower than the op timeout counts against Redis even if it
        # returned (a big transfer is allowed its bytes' time at 100 MB/s on top).
        if seconds > self.config.op_timeout_s + per_bytes / 1e8:
            self._failure()
        elif self.breaker.allow():
            self.breaker.record_success()

    def _failure(self) -> None:
        self.breaker.record_failure()

    def _breaker_changed(self, state: BreakerState) -> None:
        if state is BreakerState.OPEN:
            self._local_while_open = self.store.set_remote_enabled(False)
            self._start_probe()
        elif state is BreakerState.CLOSED:
            self.store.set_remote_enabled(True)
            self._local_while_open = False

    def _start_probe(self) -> None:
        with self._lock:
            if self._probe_thread is not None and self._probe_thread.is_alive():
                return
            self._probe_thread = threading.Thread(target=self._probe_loop, daemon=True,
                                                  name="tandem-store-reconnect")
            self._probe_thread.start()

    def _probe_loop(self) -> None:
        """Ping Redis every ``reset_s`` while the breaker is open; close it on success."""
        while not self._probe_stop.wait(min(0.05, self.breaker.reset_s)):
            state = self.breaker.state
            if state is BreakerState.CLOSED:
                return
            if self.breaker.probe_due():
                if self.store.ping():
                    self.breaker.record_success()
                    return
                self.breaker.record_failure()

    def _record(self, plan: FetchPlan, breaker_skip: bool = False,
                lookup_skipped: bool = False) -> FetchPlan:
        with self._lock:
            s = self._stats
            s.breaker_skips += breaker_skip
            s.lookups_skipped += lookup_skipped
            if plan.decision in ("fetch", "recompute", "miss"):
                s.lookups += 1
            if plan.hit_local + plan.hit_remote:
                s.hits += 1
                s.hit_tokens_local += plan.hit_local
                s.hit_tokens_remote += plan.hit_remote
            s.fetch_decisions += plan.decision == "fetch"
            s.recompute_decisions += plan.decision == "recompute"
            s.last_plan = plan.as_log_dict()
        level = logging.INFO if plan.decision in ("fetch", "recompute") else logging.DEBUG
        logger.log(level, "store plan %s (%s): hit %d dram + %d redis of %d usable, fetch %d, "
                   "est fetch %.4fs vs recompute %.4fs at %.0f tok/s", plan.decision, plan.reason,
                   plan.hit_local, plan.hit_remote, plan.usable_tokens, plan.fetch_tokens,
                   plan.est_fetch_s, plan.est_recompute_s, plan.prefill_tokens_per_s)
        return plan

    def stats(self) -> StoreStats:
        """A snapshot of every counter, the breaker state and the cost model."""
        wb = self.writeback.snapshot()
        with self._lock:
            out = StoreStats(**{f: getattr(self._stats, f) for f in StoreStats.__dataclass_fields__})
        out.writebacks_queued, out.writebacks_done = wb.queued, wb.done
        out.writebacks_failed = wb.failed
        out.writebacks_dropped += wb.dropped
        out.corrupt_entries = self.store.corrupt_entries()
        out.remote_errors = self.store.remote_errors()
        out.remote_puts_dropped = self.store.dropped_remote_puts()
        out.breaker_state = self.breaker.state.value
        out.breaker_opens = self.breaker.opens
        out.cost = self.cost.snapshot()
        return out

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait for queued write-backs (tests and benchmarks; never on the request path)."""
        deadline = time.monotonic() + timeout_s
        if not self.writeback.flush(timeout_s):
            return False
        return self.store.flush(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop the write-back and probe threads; close the store if owned. Idempotent."""
        self.writeback.close()
        self._probe_stop.set()
        thread = self._probe_thread
        if thread is not None:
            thread.join(timeout=5.0)
        if self._own_store:
            self.store.close()

    def __enter__(self) -> "PrefixCacheClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
