"""The load generator: drives a ``Plan`` against a ``Target``, bounded by construction.

Every run has a request cap and a duration cap: no request is sent after either is
reached, and requests still in flight get ``drain_timeout_s`` after the duration cap
before they are cancelled. ``request_stop()`` (Ctrl-C) cancels everything at once. Every
request that was due gets a record, whatever happened to it: there are no silent drops.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from loadtest.errors import SpecError
from loadtest.record import RequestRecord, Status
from loadtest.spec import Plan, RequestSpec, Session, Workload
from loadtest.targets.base import Target, TargetInfo, monotonic_clock

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RunLimits:
    """The bounds of one run."""
    max_requests: int = 100
    max_duration_s: float = 60.0
    drain_timeout_s: float = 30.0       # after the duration cap, for requests in flight
    request_timeout_s: float = 60.0
    max_inflight: int = 1000            # open loop: beyond this, requests are CLIENT_OVERLOAD

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise SpecError(f"max_requests must be >= 1, got {self.max_requests}")
        for name in ("max_duration_s", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise SpecError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.drain_timeout_s < 0 or self.max_inflight < 1:
            raise SpecError("drain_timeout_s must be >= 0 and max_inflight >= 1")


@dataclass(slots=True)
class RunOutcome:
    """What a run produced: every record, and how and when it stopped."""
    records: list[RequestRecord]
    started_at: float                   # unix time of t0
    duration_s: float                   # t0 to the end of the last request
    stop_reason: str                    # workload_done | max_requests | max_duration |
    interrupted: bool = False           #   drain_timeout | interrupted
    status_counts: dict[str, int] = field(default_factory=dict)


class Runner:
    """Runs ``workload`` against an opened ``target`` (whose ``info`` is given)."""

    def __init__(self, target: Target, workload: Workload, info: TargetInfo,
                 limits: RunLimits | None = None,
                 progress: Callable[[Runner], None] | None = None,
                 progress_interval_s: float = 0.5) -> None:
        self.target, self.workload, self.info = target, workload, info
        self.limits = limits or RunLimits()
        self.progress, self.progress_interval_s = progress, progress_interval_s
        self.run_id = uuid.uuid4().hex[:8]
        self.records: list[RequestRecord] = []
        self.sent = 0
        self.inflight = 0
        self.stop_reason = ""
        self.t0 = time.perf_counter()
        self.clock = monotonic_clock(self.t0)
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- state for progress displays --------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        return self.clock()

    def finished_counts(self) -> Counter[str]:
        return Counter(r.status.value for r in self.records if r.status is not Status.IN_FLIGHT)

    # -- control ------------------------------------------------------------------------
    def request_stop(self, reason: str = "interrupted") -> None:
        """Stop now: send nothing more and cancel what is in flight (safe from a signal
        handler on the loop's thread)."""
        if not self.stop_reason or reason == "interrupted":
            self.stop_reason = reason
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> RunOutcome:
        """Run to completion or to a cap; return every record."""
        plan = self.workload.plan(self.info)
        self._stop = asyncio.Event()
        started_at = time.time()
        self.t0 = time.perf_counter()
        self.clock = monotonic_clock(self.t0)
        drive = asyncio.create_task(self._drive(plan))
        stopper = asyncio.create_task(self._stop.wait())
        ticker = asyncio.create_task(self._tick()) if self.progress else None
        hard_limit = self.limits.max_duration_s + self.limits.drain_timeout_s
        try:
            done, _ = await asyncio.wait({drive, stopper}, timeout=hard_limit,
                                         return_when=asyncio.FIRST_COMPLETED)
            if drive not in done:
                if not self._stop.is_set():
                    self.stop_reason = "drain_timeout"
                await self._cancel_all(drive)
            elif drive.exception() is not None:
                raise drive.exception()  # type: ignore[misc]
        except asyncio.CancelledError:
            self.stop_reason = "interrupted"
            await self._cancel_all(drive)
        finally:
            stopper.cancel()
            if ticker is not None:
                ticker.cancel()
        if self.progress:
            self.progress(self)
        ends = [r.end_s for r in self.records if r.end_s is not None]
        duration = max(ends, default=self.clock())
        return RunOutcome(self.records, started_at, duration, self.stop_reason or "workload_done",
                          self.stop_reason == "interrupted", dict(self.finished_counts()))

    async def _cancel_all(self, drive: asyncio.Task[None]) -> None:
        drive.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(drive, *self._tasks, return_exceptions=True)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval_s)
            if self.progress:
                self.progress(self)

    # -- sending ------------------------------------------------------------------------
    def _may_send(self) -> bool:
        if self._stop is not None and self._stop.is_set():
            return False
        if self.sent >= self.limits.max_requests:
            self.stop_reason = self.stop_reason or "max_requests"
            return False
        if self.clock() >= self.limits.max_duration_s:
            self.stop_reason = self.stop_reason or "max_duration"
            return False
        return True

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False if the run was stopped meanwhile."""
        if seconds > 0 and self._stop is not None:
            try:
                await asyncio.wait_for(self._stop.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        return not (self._stop is not None and self._stop.is_set())

    async def _drive(self, plan: Plan) -> None:
        if plan.start_offsets is not None:
            for offset in plan.start_offsets:
                if offset >= self.limits.max_duration_s:
                    self.stop_reason = self.stop_reason or "max_duration"
                    break
                if not await self._pause(offset - self.clock()) or not self._may_send():
                    break
                session = next(plan.sessions, None)
                if session is None:
                    break
                task = asyncio.create_task(self._session(session))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.gather(*list(self._tasks))
        else:
            await asyncio.gather(*(self._worker(plan) for _ in range(plan.concurrency or 1)))

    async def _worker(self, plan: Plan) -> None:
        while self._may_send():
            session = next(plan.sessions, None)
            if session is None:
                return
            await self._session(session)

    async def _session(self, session: Session) -> None:
        previous: RequestRecord | None = None
        while True:
            spec = session.next_request(previous)
            if spec is None:
                return
            if spec.delay_s and not await self._pause(spec.delay_s):
                return
            if not self._may_send():
                return
            self.sent += 1
            previous = await self._send(spec)

    async def _send(self, spec: RequestSpec) -> RequestRecord:
        index = len(self.records)
        record = RequestRecord(index=index, session=spec.session, turn=spec.turn,
                               request_id=f"lt-{self.run_id}-{index}", send_s=self.clock(),
                               sent_prompt_tokens=len(spec.token_ids), max_tokens=spec.max_tokens)
        self.records.append(record)
        if self.inflight >= self.limits.max_inflight:
            record.status, record.end_s = Status.CLIENT_OVERLOAD, record.send_s
            record.error = f"harness in-flight cap {self.limits.max_inflight} reached"
            return record
        self.inflight += 1
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                await self.target.execute(spec, record, self.clock)
        except TimeoutError:
            record.status = Status.TIMEOUT
            record.error = f"no answer within {self.limits.request_timeout_s} s"
        except asyncio.CancelledError:
            record.status = Status.CANCELLED
            record.error = f"run stopped ({self.stop_reason or 'cancelled'})"
            raise
        except Exception as exc:   # a target bug must not end the run: count it
            logger.exception("target failed on request %d", index)
            record.status, record.error = Status.ERROR, f"{type(exc).__name__}: {exc}"
        finally:
            self.inflight -= 1
            record.end_s = self.clock()
            record.e2e_ms = (record.end_s - record.send_s) * 1000.0
            if record.status is Status.IN_FLIGHT:
                record.status, record.error = Status.ERROR, "target returned without a status"
        return record
