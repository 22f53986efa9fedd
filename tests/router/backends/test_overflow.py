"""PrefillOverflow: when a disaggregated router computes a prompt on its decode worker."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from router.backends.overflow import PrefillOverflow
from router.policies.base import WorkerView


def _prefill(name: str, tokens_per_s: float = 10_000.0, cached: set[bytes] = frozenset()) -> WorkerView:
    return WorkerView(name, None, healthy=True, cached_hashes=set(cached),
                      last_load=SimpleNamespace(prefill_tokens_per_s=tokens_per_s))


def _rule(**kw) -> PrefillOverflow:
    return PrefillOverflow(**{"enabled": True, "tpot_ms": 20.0, "max_stall_tpot": 8.0, **kw})


DEC = WorkerView("d0", None, healthy=True)


def test_a_prompt_overflows_only_when_every_prefill_worker_has_half_its_length_ahead():
    rule, pool = _rule(), [_prefill("p0"), _prefill("p1")]
    assert not rule.choose(pool, DEC, 512)                 # idle pool: prefill there
    rule.sent("p0", 600)
    assert not rule.choose(pool, DEC, 512)                 # p1 is idle
    rule.sent("p1", 255)
    assert not rule.choose(pool, DEC, 512)                 # 255 ahead < 512 / 2
    rule.sent("p1", 1)
    assert rule.choose(pool, DEC, 512)
    rule.done("p1", 256)
    assert not rule.choose(pool, DEC, 512) and rule.pending == {"p0": 600}


def test_a_decode_worker_takes_one_overflow_prompt_at_a_time():
    rule, pool = _rule(), [_prefill("p0")]
    rule.sent("p0", 1000)
    assert rule.choose(pool, DEC, 100)
    rule.sent(DEC.name, 100)
    assert not rule.choose(pool, DEC, 100)                 # its first prompt has no first token yet
    assert rule.choose(pool, WorkerView("d1", None), 100)  # another decode worker may
    rule.done(DEC.name, 100)
    assert rule.choose(pool, DEC, 100)


def test_a_prompt_whose_prefill_would_stall_decodes_too_long_never_overflows():
    # 10k tokens/s: 1,600 tokens take 160 ms = 8 x the 20 ms TPOT objective (allowed); 1,700 not.
    rule, pool = _rule(), [_prefill("p0")]
    rule.sent("p0", 10_000)
    assert rule.choose(pool, DEC, 1600)
    assert not rule.choose(pool, DEC, 1700)
    tight = _rule(tpot_ms=5.0)                             # a tight objective: only short prompts
    tight.sent("p0", 10_000)
    assert tight.choose(pool, DEC, 400) and not tight.choose(pool, DEC, 401)


def test_no_overflow_without_a_measured_speed_a_cached_prefix_or_when_off():
    rule = _rule()
    rule.sent("p0", 5000)
    assert not rule.choose([_prefill("p0", tokens_per_s=0.0)], DEC, 100)
    unreported = WorkerView("p0", None, healthy=True)
    assert not rule.choose([unreported], DEC, 100)
    assert not rule.choose([_prefill("p0", cached={b"h0"})], DEC, 100, first_block=b"h0")
    assert rule.choose([_prefill("p0", cached={b"h0"})], DEC, 100, first_block=b"h1")
    assert not rule.choose([], DEC, 100)
    off = _rule(enabled=False)
    off.sent("p0", 5000)
    assert not off.choose([_prefill("p0")], DEC, 100)


@pytest.mark.parametrize("field,value", [("tpot_ms", 0.0), ("max_stall_tpot", -1.0)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        _rule(**{field: value})


def test_place_sends_to_a_prefill_worker_with_room_at_once():
    rule, pool = _rule(room_tokens=1000), [_prefill("p0"), _prefill("p1")]
    rule.sent("p0", 5000)
    assert asyncio.run(rule.place(lambda: pool, DEC, 100)) is False      # p1 has room
    assert asyncio.run(rule.place(lambda: [], DEC, 100)) is False        # none healthy: the pick says so


def test_a_burst_waits_in_the_router_and_goes_where_room_frees_first():
    """Both the prefill pool (at its room) and the decode worker (one overflow prompt) are
    full: requests wait; the decode worker's first token lets one overflow, a prefill worker's
    lets one go to the pool."""
    async def scenario():
        rule, pool = _rule(room_tokens=1000), [_prefill("p0")]
        rule.sent("p0", 1000)
        rule.sent(DEC.name, 300)
        first = asyncio.ensure_future(rule.place(lambda: pool, DEC, 300))
        await asyncio.sleep(0.05)
        assert not first.done() and rule.waiting == 1
        rule.done(DEC.name, 300)
        assert await asyncio.wait_for(first, 1) is True                   # overflow
        rule.sent(DEC.name, 300)
        second = asyncio.ensure_future(rule.place(lambda: pool, DEC, 300))
        await asyncio.sleep(0.05)
        assert not second.done()
        rule.done("p0", 500)
        assert await asyncio.wait_for(second, 1) is False                 # the pool has room
        assert rule.waiting == 0
    asyncio.run(scenario())


def test_a_waiting_request_sees_workers_that_appear_without_a_notification():
    async def scenario():
        rule, pool = _rule(room_tokens=1000), [_prefill("p0")]
        rule.sent("p0", 1000)
        rule.sent(DEC.name, 1)
        task = asyncio.ensure_future(rule.place(lambda: pool, DEC, 300))
        await asyncio.sleep(0.05)
        pool.append(_prefill("p1"))                                       # no done() call
        assert await asyncio.wait_for(task, 3) is False
    asyncio.run(scenario())
