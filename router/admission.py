"""SLO-aware admission: refuse at once what would be queued into a missed objective.

Each new request gets a TTFT estimate and a TPOT estimate, both lines fitted to what the
router observed on admitted requests:

- TTFT (ms) as a line in the prompt tokens ahead of the first token (every admitted request
  still waiting for its first token, plus the request's own): the intercept is the fixed cost
  of a request (routing, scheduling, KV hand-off), the slope the time per queued prefill token.
  Only requests that got a first token are observations, so invalid, cancelled or refused
  requests teach nothing; tiny prompts pin the intercept, not the slope. While the observed
  queue sizes are too alike to give a slope, the slope is the backend's measured prefill speed
  (``Capacity.prefill_tokens_per_s``), else flat.
- TPOT (ms) as a line in the decode batch size (requests decoding per decode worker).

When an estimate exceeds the objective (``slo.ttft_ms``, ``slo.tpot_ms``) by more than
``router.admission.miss_margin``, or the bounded queue is full, the request is refused with
``AdmissionRejected`` (RESOURCE_EXHAUSTED / HTTP 429) and a retry-after hint. An idle router
never refuses on an estimate: waiting could not make that request faster. Before any
observation and any backend figure (a cold start), at most one request per prefill worker
waits for its first token: nothing is known about what more would cost.

The samples of one client request (``n`` > 1, one fork ``group``) share one prefill: the
first is judged as any request; the others add no prompt tokens to the queue, are not
judged on TTFT (theirs is the first one's) and teach the TTFT line nothing, but count for
the queue bound, the decode load and TPOT.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from router.config import AdmissionConfig, SLOConfig
from router.errors import Overloaded

_TPOT_DECAY = 0.95             # weight kept by older TPOT observations per new one
_TPOT_MIN_SAMPLES = 3
_TTFT_DECAY = 0.9              # ... and by older TTFT observations
_TTFT_MIN_REL_SPREAD = 0.25    # queue sizes spread (std / mean) enough to fit a TTFT slope
_MIN_RETRY_S = 0.05


class LineFit:
    """y as a line in x, fitted by exponentially weighted least squares; while the observed
    x are too alike to give a slope (``min_rel_spread``), the slope is the caller's prior
    (or flat), through the weighted mean. Slope and intercept are never negative."""

    def __init__(self, decay: float, min_samples: int = 1, min_rel_spread: float = 0.0) -> None:
        self.decay, self.min_samples, self.min_rel_spread = decay, min_samples, min_rel_spread
        self.n = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, x: float, y: float) -> None:
        d = self.decay
        self.n += 1
        self._w = d * self._w + 1.0
        self._x = d * self._x + x
        self._y = d * self._y + y
        self._xx = d * self._xx + x * x
        self._xy = d * self._xy + x * y

    def slope(self, prior: float | None = None) -> float | None:
        """The fitted slope, or ``prior`` while the x do not spread; None before any sample."""
        if self.n < self.min_samples:
            return None
        w, x = self._w, self._x
        spread = w * self._xx - x * x                      # w^2 * variance of x
        enough = max(1e-6 * w * w, (self.min_rel_spread * x) ** 2)
        if spread > enough:
            return max(0.0, (w * self._xy - x * self._y) / spread)
        return prior if prior is not None else 0.0

    def predict(self, x: float, prior_slope: float | None = None) -> float | None:
        slope = self.slope(prior_slope)
        if slope is None:
            return None
        w = self._w
        return max(0.0, (self._y - slope * self._x) / w) + slope * x


class TpotModel(LineFit):
    """TPOT (ms) as a line in the decode batch size."""

    def __init__(self) -> None:
        super().__init__(_TPOT_DECAY, _TPOT_MIN_SAMPLES)


class TtftModel(LineFit):
    """TTFT (ms) as a line in the prompt tokens ahead of the first token."""

    def __init__(self) -> None:
        super().__init__(_TTFT_DECAY, 1, _TTFT_MIN_REL_SPREAD)


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
    prefill_workers: int = 1
    queued_prompt_tokens: int | None = None     # the workers' own reports, every router's requests
    decoding: int | None = None                 # requests the decode (or colocated) workers run


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

    __slots__ = ("_ctl", "request_id", "prompt_tokens", "tokens_ahead", "admitted_at",
                 "first_at", "last_at", "decode_load", "_released", "group", "sibling")

    def __init__(self, ctl: AdmissionController, request_id: str, prompt_tokens: int,
                 tokens_ahead: int, now: float, group: str = "", sibling: bool = False):
        self._ctl, self.request_id, self.prompt_tokens = ctl, request_id, prompt_tokens
        self.group, self.sibling = group, sibling   # a later sample of a fork group
        self.tokens_ahead = tokens_ahead            # queued prompt tokens at admission, own included
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
        self._groups: dict[str, int] = {}           # fork group -> its samples in flight
        self.ttft = TtftModel()
        self.tpot = TpotModel()

    @property
    def inflight(self) -> int:
        return len(self._pending) + len(self._decoding)

    @property
    def queued_requests(self) -> int:
        return len(self._pending)

    @property
    def decoding(self) -> int:
        return len(self._decoding)

    def _prior_ms_per_token(self) -> float | None:
        cap = self._capacity()
        rate = cap.prefill_tokens_per_s if cap else None
        return 1000.0 / rate if rate and rate > 0 else None

    def prefill_rate(self) -> float | None:
        """Queued prefill tokens/s the TTFT estimate assumes (the inverse of its slope);
        None while it knows none (a flat estimate, or nothing measured)."""
        slope = self.ttft.slope(self._prior_ms_per_token())
        if slope is None:
            slope = self._prior_ms_per_token()
        return 1000.0 / slope if slope else None

    def estimate(self, prompt_tokens: int) -> Estimate:
        """Predicted TTFT and TPOT of a request of ``prompt_tokens`` admitted now."""
        cap = self._capacity()
        queued = self._queued(cap)
        ahead = queued + prompt_tokens
        prior = self._prior_ms_per_token()
        ttft = self.ttft.predict(ahead, prior)
        if ttft is None and prior is not None:
            ttft = prior * ahead                    # compute time only: a lower bound
        workers = max(1, cap.decode_workers if cap else 1)
        tpot = self.tpot.predict(self._decoding_now(cap) / workers + 1.0)
        return Estimate(ttft, tpot, len(self._pending), queued)

    def _queued(self, cap: Capacity | None) -> int:
        """Prompt tokens ahead of a new request: this router's books, or what the workers
        report when ``worker_queues`` is on and they report more (other routers' requests)."""
        if self.cfg.worker_queues and cap is not None and cap.queued_prompt_tokens is not None:
            return max(self.queued_tokens, cap.queued_prompt_tokens)
        return self.queued_tokens

    def _decoding_now(self, cap: Capacity | None) -> int:
        if self.cfg.worker_queues and cap is not None and cap.decoding is not None:
            return max(len(self._decoding), cap.decoding)
        return len(self._decoding)

    def admit(self, request_id: str, prompt_tokens: int, group: str = "",
              resumed: bool = False) -> Ticket:
        """A Ticket for the request, or AdmissionRejected with the reason and a retry hint.
        ``group``: the request's fork group (the samples of one request share a prefill).
        ``resumed``: a stream that broke and comes back (its router died): work admitted
        before, held by a worker or re-prefilled at once, so only the in-flight cap applies."""
        if self.inflight >= self.max_inflight:
            raise AdmissionRejected("inflight_full", f"{self.inflight} requests in flight, the "
                                    f"limit is {self.max_inflight}", 0.5)
        # A later sample of a fork group, or a resumed stream: no prefill of its own to plan
        # for or to learn from (its prompt is computed once, for the group's first).
        sibling = resumed or (bool(group) and self._groups.get(group, 0) > 0)
        if sibling:
            prompt_tokens = 0
        if self.cfg.enabled and not resumed:
            self._check(prompt_tokens, sibling)
        ahead = self._queued(self._capacity()) + prompt_tokens if self.cfg.worker_queues else None
        self.queued_tokens += prompt_tokens
        ticket = Ticket(self, request_id, prompt_tokens, ahead if ahead is not None else self.queued_tokens,
                        self._clock(), group, sibling)
        self._pending[request_id] = ticket
        if group:
            self._groups[group] = self._groups.get(group, 0) + 1
        return ticket

    def _check(self, prompt_tokens: int, sibling: bool = False) -> None:
        cfg, slack = self.cfg, 1.0 + self.cfg.miss_margin
        if len(self._pending) >= cfg.max_queue:
            est = self.estimate(0).ttft_ms
            raise AdmissionRejected("queue_full", f"{len(self._pending)} requests wait for "
                                    f"prefill, the queue holds {cfg.max_queue}",
                                    (est or 500.0) / 1000.0 / max(1, len(self._pending)))
        est = self.estimate(prompt_tokens)
        cap = self._capacity()
        # Idle (nothing queued ahead, here or, with worker_queues, at the workers): waiting
        # could not make it faster.
        if (self._pending or self._queued(cap) > 0) and not sibling:
            self._check_ttft(est, self.slo.ttft_ms * slack)
        limit = self.slo.tpot_ms * slack
        if self._decoding_now(cap) and est.tpot_ms is not None and est.tpot_ms > limit:
            raise AdmissionRejected(
                "tpot_slo", f"estimated time per output token {est.tpot_ms:.1f} ms at the "
                f"current decode load exceeds the objective of {self.slo.tpot_ms:g} ms", 1.0)

    def _check_ttft(self, est: Estimate, limit: float) -> None:
        if est.ttft_ms is None:                     # a cold start: one waiting per worker
            cap = self._capacity()
            if len(self._pending) >= max(1, cap.prefill_workers if cap else 1):
                raise AdmissionRejected(
                    "ttft_unknown", f"no prefill has been measured yet and {len(self._pending)} "
                    f"requests already wait for their first token", 0.25)
        elif est.ttft_ms > limit:
            raise AdmissionRejected(
                "ttft_slo", f"estimated time to first token {est.ttft_ms:.0f} ms (queue: "
                f"{est.queued_requests} requests, {est.queued_tokens} tokens) exceeds the "
                f"objective of {self.slo.ttft_ms:g} ms", (est.ttft_ms - limit) / 1000.0)

    # -- bookkeeping (called by Ticket) ---------------------------------------------------
    def _leave_queue(self, ticket: Ticket) -> bool:
        if self._pending.pop(ticket.request_id, None) is None:
            return False
        self.queued_tokens -= ticket.prompt_tokens
        return True

    def _on_first_token(self, ticket: Ticket) -> None:
        if not self._leave_queue(ticket):
            return
        self._decoding[ticket.request_id] = ticket
        cap = self._capacity()
        ticket.decode_load = self._decoding_now(cap) / max(1, cap.decode_workers if cap else 1)
        if not ticket.sibling:
            self.ttft.observe(ticket.tokens_ahead, 1000.0 * (ticket.first_at - ticket.admitted_at))

    def _on_release(self, ticket: Ticket, completion_tokens: int) -> None:
        if ticket.group:
            left = self._groups.pop(ticket.group) - 1
            if left > 0:
                self._groups[ticket.group] = left
        if self._leave_queue(ticket):
            return                                  # no first token: nothing to learn
        if self._decoding.pop(ticket.request_id, None) is None:
            return
        if completion_tokens >= 2 and ticket.first_at is not None and ticket.last_at is not None:
            tpot_ms = 1000.0 * (ticket.last_at - ticket.first_at) / (completion_tokens - 1)
            self.tpot.observe(ticket.decode_load, tpot_ms)
