"""Circuit breaker for the remote tier.

closed -> (``failures`` consecutive failures) -> open -> (``reset_s`` later, a probe is
allowed) -> half_open -> success: closed / failure: open again. While open, callers skip
Redis entirely, so a dead or slow Redis costs nothing per request.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Thread-safe consecutive-failure breaker with a timed reconnect probe."""

    def __init__(self, failures: int, reset_s: float,
                 on_change: Callable[[BreakerState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        if reset_s <= 0:
            raise ValueError(f"reset_s must be > 0, got {reset_s}")
        self.failures = failures
        self.reset_s = reset_s
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self.opens = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """May the remote tier be used now? (closed, or half-open for the probe)."""
        with self._lock:
            return self._state is BreakerState.CLOSED

    def probe_due(self) -> bool:
        """True once per open period, after ``reset_s``: the caller should probe now."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
                self._state = BreakerState.HALF_OPEN
                changed = True
            else:
                changed = False
        if changed:
            self._notify(BreakerState.HALF_OPEN)
        return changed

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            changed = self._state is not BreakerState.CLOSED
            self._state = BreakerState.CLOSED
        if changed:
            logger.info("store circuit breaker closed: redis is back")
            self._notify(BreakerState.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            trip = (self._state is BreakerState.HALF_OPEN
                    or (self._state is BreakerState.CLOSED and self._consecutive >= self.failures))
            if trip:
                self._state = BreakerState.OPEN
                self._opened_at = self._clock()
                self.opens += 1
        if trip:
            logger.warning("store circuit breaker open after %d failures: recomputing "
                           "without redis, next probe in %.1fs", self._consecutive, self.reset_s)
            self._notify(BreakerState.OPEN)

    def _notify(self, state: BreakerState) -> None:
        if self._on_change is not None:
            self._on_change(state)
