"""SLO-aware admission: refuse at once what would be queued into a missed objective.

Each new request gets a TTFT estimate from the router's own queue state (the prompt
tokens of every admitted request still waiting for its first token, plus its own) and
the measured prefill throughput, and a TPOT estimate from the decode load (requests
decoding per decode worker) through a line fitted to observed TPOTs. When an estimate
exceeds the objective (``slo.ttft_ms``, ``slo.tpot_ms``) by more than
``router.admission.miss_margin``, or the bounded queue is full, the request is refused
with ``AdmissionRejected`` (RESOURCE_EXHAUSTED / HTTP 429) and a retry-after hint. An idle
router never refuses on an estimate: waiting could not make that request faster.

Throughput is learned over busy time (some request waiting for its first token): prefill
tokens completed / busy seconds, an exponential average seeded by what the backend
reports (``Capacity.prefill_tokens_per_s``, the workers' measured prefill speed). The
estimate plans with that mean less its noise (mean / (1 + coefficient of variation)).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cluster.config import AdmissionConfig, SLOConfig
from router.errors import Overloaded

_TPOT_DECAY = 0.95             # weight kept by older TPOT observations per new one
_TPOT_MIN_SAMPLES = 3
_RATE_ALPHA = 0.3              # weight of a new throughput sample
_MIN_SAMPLE_S = 0.05           # busy time a throughput sample spans at least
_MIN_RETRY_S = 0.05


class TpotModel:
    """TPOT (ms) as a line in the decode batch size, fitted by exponentially weighted least
    squares; a flat average while the observed batch sizes are too alike to give a slope."""

    def __init__(self) -> None:
        self.n = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, batch: float, tpot_ms: float) -> None:
        d = _TPOT_DECAY
        self.n += 1
        self._w = d * self._w + 1.0
        self._x = d * self._x + batch
        self._y = d * self._y + tpot_ms
        self._xx = d * self._xx + batch * batch
        self._xy = d * self._xy + batch * tpot_ms

    def predict(self, batch: float) -> float | None:
        if self.n < _TPOT_MIN_SAMPLES:
            return None
        w, x, y = self._w, self._x, self._y
        spread = w * self._xx - x * x
        slope = (w * self._xy - x * y) / spread if spread > 1e-6 * w * w else 0.0
        slope = max(0.0, slope)
        return max(0.0, (y - slope * x) / w + slope * batch)


class AdmissionRejected(Overloaded):
    """Refused by admission control; ``reason`` labels the metric, ``retry_after_s`` hints."""

    def __init__(self, reason: str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = max(_MIN_RETRY_S, float(retry_after_s))


@dataclass(slots=True)
class Capacity:
    """What a backend reports about its capacity (optional; see ``capacity_of``)."""
    prefill_tokens_per_s: float | None = None   # summed over healthy prefill workers
    decode_workers: int = 1


def capacity_of(backend: object) -> Callable[[], Capacity | None]:
    """The backend's ``admission_capacity()`` hook, or a source that knows nothing."""
    hook = getattr(backend, "admission_capacity", None)
    return hook if callable(hook) else (lambda: None)


@dataclass(slots=True)
class Estimate:
    ttft_ms: float | None
    tpot_ms: float | None
    queued_requests: int
    queued_tokens: int


class Ticket:
    """One admitted request's place in the controller's books; ``release()`` in a finally."""

    __slots__ = ("_ctl", "request_id", "prompt_tokens", "admitted_at", "first_at", "last_at",
                 "decode_load", "_released")

    def __init__(self, ctl: AdmissionController, request_id: str, prompt_tokens: int, now: float):
        self._ctl, self.request_id, self.prompt_tokens = ctl, request_id, prompt_tokens
        self.admitted_at = now
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.decode_load = 0.0
        self._released = False

    def first_token(self) -> None:
        """Prefill is done: the request leaves the prefill queue and starts decoding."""
        if self.first_at is None and not self._released:
            self.first_at = self.last_at = self._ctl._clock()
            self._ctl._on_first_token(self)

    def token(self) -> None:
        """A later token arrived (its time ends the TPOT measurement)."""
        if self.first_at is not None:
            self.last_at = self._ctl._clock()

    def release(self, completion_tokens: int = 0) -> None:
        """The request ended (any way); its observed TPOT trains the decode model."""
        if not self._released:
            self._released = True
            self._ctl._on_release(self, completion_tokens)


class AdmissionController:
    """Bounded in-flight and queue, TTFT and TPOT estimates; ``admit()`` or refuse."""

    def __init__(self, cfg: AdmissionConfig, slo: SLOConfig, max_inflight: int,
                 capacity: Callable[[], Capacity | None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.slo, self.max_inflight = cfg, slo, max_inflight
        self._capacity, self._clock = capacity, clock
        self._pending: dict[str, Ticket] = {}       # admitted, no first token yet
        self._decoding: dict[str, Ticket] = {}
        self.queued_tokens = 0
        self.rate: float | None = None              # measured prefill tokens/s (mean)
        self.rate_var = 0.0                         # ... and the variance of the samples
        self.tpot = TpotModel()
        self._busy_s = 0.0
        self._busy_since: float | None = None
        self._sample_tokens = 0
        self._sample_busy_s = 0.0

    @property
    def inflight(self) -> int:
        return len(self._pending) + len(self._decoding)

    @property
    def queued_requests(self) -> int:
        return len(self._pending)

    @property
    def decoding(self) -> int:
        return len(self._decoding)

    def prefill_rate(self) -> float | None:
        """Prefill tokens/s to plan with: the measured mean less its noise (mean / (1 + cv)),
        so that a noisy machine is planned for its slow moments; before any measurement,
        the backend's figure."""
        if self.rate is not None:
            return self.rate / (1.0 + math.sqrt(self.rate_var) / self.rate)
        cap = self._capacity()
        return cap.prefill_tokens_per_s if cap and cap.prefill_tokens_per_s else None

    def estimate(self, prompt_tokens: int) -> Estimate:
        """Predicted TTFT and TPOT of a request of ``prompt_tokens`` admitted now."""
        rate = self.prefill_rate()
        ttft = None if rate is None else 1000.0 * (self.queued_tokens + prompt_tokens) / rate
        cap = self._capacity()
        workers = max(1, cap.decode_workers if cap else 1)
        tpot = self.tpot.predict(len(self._decoding) / workers + 1.0)
        return Estimate(ttft, tpot, len(self._pending), self.queued_tokens)

    def admit(self, request_id: str, prompt_tokens: int) -> Ticket:
        """A Ticket for the request, or AdmissionRejected with the reason and a retry hint."""
        if self.inflight >= self.max_inflight:
            raise AdmissionRejected("inflight_full", f"{self.inflight} requests in flight, the "
                                    f"limit is {self.max_inflight}", 0.5)
        if self.cfg.enabled:
            self._check(prompt_tokens)
        now = self._clock()
        ticket = Ticket(self, request_id, prompt_tokens, now)
        self._advance_busy(now)
        if not self._pending:
            self._busy_since = now
        self._pending[request_id] = ticket
        self.queued_tokens += prompt_tokens
        return ticket

    def _check(self, prompt_tokens: int) -> None:
        cfg, slack = self.cfg, 1.0 + self.cfg.miss_margin
        if len(self._pending) >= cfg.max_queue:
            est = self.estimate(0).ttft_ms
            raise AdmissionRejected("queue_full", f"{len(self._pending)} requests wait for "
                                    f"prefill, the queue holds {cfg.max_queue}",
                                    (est or 500.0) / 1000.0 / max(1, len(self._pending)))
        est = self.estimate(prompt_tokens)
        limit = self.slo.ttft_ms * slack
        if self._pending and est.ttft_ms is not None and est.ttft_ms > limit:
            raise AdmissionRejected(
                "ttft_slo", f"estimated time to first token {est.ttft_ms:.0f} ms (queue: "
                f"{est.queued_requests} requests, {est.queued_tokens} tokens) exceeds the "
                f"objective of {self.slo.ttft_ms:g} ms", (est.ttft_ms - limit) / 1000.0)
        limit = self.slo.tpot_ms * slack
        if self._decoding and est.tpot_ms is not None and est.tpot_ms > limit:
            raise AdmissionRejected(
                "tpot_slo", f"estimated time per output token {est.tpot_ms:.1f} ms at the "
                f"current decode load exceeds the objective of {self.slo.tpot_ms:g} ms", 1.0)

    # -- bookkeeping (called by Ticket) ---------------------------------------------------
    def _advance_busy(self, now: float) -> None:
        if self._pending and self._busy_since is not None:
            self._busy_s += now - self._busy_since
            self._sample_busy_s += now - self._busy_since
            self._busy_since = now

    def _leave_queue(self, ticket: Ticket) -> bool:
        if ticket.request_id not in self._pending:
            return False
        self._advance_busy(self._clock())
        del self._pending[ticket.request_id]
        self.queued_tokens -= ticket.prompt_tokens
        if not self._pending:
            self._busy_since = None
        return True

    def _on_first_token(self, ticket: Ticket) -> None:
        if not self._leave_queue(ticket):
            return
        self._decoding[ticket.request_id] = ticket
        cap = self._capacity()
        ticket.decode_load = len(self._decoding) / max(1, cap.decode_workers if cap else 1)
        self._sample_tokens += ticket.prompt_tokens
        if self._sample_busy_s >= _MIN_SAMPLE_S:
            self._learn_rate(self._sample_tokens / self._sample_busy_s)
            self._sample_tokens, self._sample_busy_s = 0, 0.0

    def _learn_rate(self, sample: float) -> None:
        if self.rate is None:
            cap = self._capacity()
            prior = cap.prefill_tokens_per_s if cap and cap.prefill_tokens_per_s else None
            self.rate = sample if prior is None else prior
        diff = sample - self.rate
        self.rate += _RATE_ALPHA * diff
        self.rate_var = (1 - _RATE_ALPHA) * (self.rate_var + _RATE_ALPHA * diff * diff)

    def _on_release(self, ticket: Ticket, completion_tokens: int) -> None:
        if self._leave_queue(ticket):
            return
        if self._decoding.pop(ticket.request_id, None) is None:
            return
        if completion_tokens >= 2 and ticket.first_at is not None and ticket.last_at is not None:
            tpot_ms = 1000.0 * (ticket.last_at - ticket.first_at) / (completion_tokens - 1)
            self.tpot.observe(ticket.decode_load, tpot_ms)
