"""Circuit breaker: opens after consecutive failures, probes after the reset time."""
from __future__ import annotations

import pytest

from kv_transfer.store.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_opens_after_consecutive_failures_only():
    seen = []
    breaker = CircuitBreaker(3, 1.0, on_change=seen.append, clock=Clock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()          # resets the run
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert not breaker.allow() and breaker.state is BreakerState.OPEN
    assert seen == [BreakerState.OPEN] and breaker.opens == 1


def test_probe_after_reset_time_then_close_or_reopen():
    clock = Clock()
    breaker = CircuitBreaker(1, 2.0, clock=clock)
    breaker.record_failure()
    assert not breaker.probe_due()
    clock.now = 2.5
    assert breaker.probe_due() and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.probe_due()    # one probe per open period
    breaker.record_failure()          # probe failed: open again, timer restarted
    assert breaker.state is BreakerState.OPEN and breaker.opens == 2
    clock.now = 3.0
    assert not breaker.probe_due()
    clock.now = 5.0
    assert breaker.probe_due()
    breaker.record_success()
    assert breaker.allow() and breaker.state is BreakerState.CLOSED


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0)
