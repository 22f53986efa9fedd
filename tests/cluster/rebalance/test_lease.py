"""The switch lease: one grant per cooldown, whichever controller claims."""
from __future__ import annotations

import pytest

from cluster.rebalance.lease import SwitchLease


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_claim_within_the_cooldown_of_the_last_grant_is_refused_whoever_asks():
    clock = _Clock()
    lease = SwitchLease(clock)
    assert lease.claim("router-a", 10.0)
    clock.t += 9.9
    assert not lease.claim("router-b", 10.0)
    assert not lease.claim("router-a", 10.0)
    assert lease.holder == "router-a"
    clock.t += 0.1
    assert lease.claim("router-b", 10.0)
    assert lease.holder == "router-b"


def test_a_refused_claim_does_not_extend_the_cooldown():
    clock = _Clock()
    lease = SwitchLease(clock)
    assert lease.claim("a", 5.0)
    for _ in range(4):
        clock.t += 1.0
        assert not lease.claim("b", 5.0)
    clock.t += 1.0
    assert lease.claim("b", 5.0)


def test_no_cooldown_grants_every_claim_and_a_negative_one_is_an_error():
    lease = SwitchLease(_Clock())
    assert lease.claim("a", 0.0) and lease.claim("b", 0.0)
    with pytest.raises(ValueError, match="cooldown_s"):
        lease.claim("a", -1.0)
