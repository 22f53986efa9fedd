"""Load reports carry the prefix-cache index as deltas that rebuild the exact set."""
from __future__ import annotations

import random

import pytest

from engine.load import CachedHashFeed


def _apply(held: set[bytes], delta) -> set[bytes]:
    base, _, added, removed = delta
    if base == 0:
        return set(added)
    return (held - set(removed)) | set(added)


def test_callers_at_any_version_in_the_history_rebuild_the_set_from_deltas():
    rng = random.Random(3)
    feed = CachedHashFeed(history=8)
    pool = [bytes([i, j]) for i in range(40) for j in range(5)]
    truth: set[bytes] = set()
    callers = {lag: (0, set()) for lag in (1, 2, 5)}      # caller polling every `lag` updates
    for step in range(1, 200):
        truth -= set(rng.sample(sorted(truth), min(len(truth), rng.randrange(4)))) if truth else set()
        truth |= set(rng.sample(pool, rng.randrange(6)))
        feed.update(set(truth))
        for lag, (version, held) in callers.items():
            if step % lag == 0:
                delta = feed.since(version)
                assert delta[1] == feed.version
                callers[lag] = (delta[1], _apply(held, delta))
                assert callers[lag][1] == truth
    assert all(v > 0 for v, _ in callers.values())


def test_a_delta_carries_only_the_changes_and_an_unchanged_set_keeps_its_version():
    feed = CachedHashFeed()
    feed.update({b"a", b"b", b"c"})
    base, v1, added, removed = feed.since(0)
    assert base == 0 and sorted(added) == [b"a", b"b", b"c"] and removed == []
    feed.update({b"a", b"b", b"c"})
    assert feed.version == v1 and feed.since(v1) == (v1, v1, [], [])
    feed.update({b"b", b"c", b"d"})
    assert feed.since(v1) == (v1, v1 + 1, [b"d"], [b"a"])


def test_a_caller_older_than_the_history_or_from_the_future_gets_the_whole_set():
    feed = CachedHashFeed(history=2)
    for i in range(5):
        feed.update({bytes([i])})
    assert feed.since(1)[0] == 0 and feed.since(1)[2] == [bytes([4])]
    assert feed.since(99)[0] == 0
    assert feed.since(feed.version - 2)[0] == feed.version - 2   # the oldest delta still kept


def test_history_must_hold_a_version():
    with pytest.raises(ValueError):
        CachedHashFeed(history=0)


def test_a_report_gives_the_mean_step_since_the_previous_report_and_zero_when_none_ran():
    import asyncio

    from engine import LLM, SamplingParams
    from engine.driver import EngineDriver
    from engine.load import LoadReporter

    driver = EngineDriver(LLM("stories260K").engine, "steps")
    reporter = LoadReporter("w", "inc", "decode", with_hashes=False)
    try:
        async def main():
            first = await reporter.report(driver)
            q = driver.subscribe("a")
            await driver.call(lambda e: e.add_request("a", [1, 403, 407], SamplingParams(
                temperature=0.0, max_tokens=16, ignore_eos=True)))
            while not (await asyncio.wait_for(q.get(), 30)).finished:
                pass
            busy = await reporter.report(driver)
            idle = await reporter.report(driver)
            return first, busy, idle, driver.busy_s, driver.steps
        first, busy, idle, busy_s, steps = asyncio.run(main())
        assert first.step_ms == 0.0 and idle.step_ms == 0.0
        assert steps == 16 and busy.step_ms == pytest.approx(1000 * busy_s / steps)
    finally:
        driver.stop()
