"""Routing policies pick by load, KV room and cached prefix, deterministically."""
from __future__ import annotations

import pytest

from tandem_common.hashing import chunk_hashes
from router.policies import RoutingContext, WorkerView, create_policy, policy_names


def _ctx(tokens: list[int], salt: bytes = b"") -> RoutingContext:
    return RoutingContext("r", len(tokens), chunk_hashes(tokens, 16, salt), 16)


def test_registry_knows_every_policy_and_rejects_unknown_names():
    assert {"round_robin", "least_loaded", "prefix_aware", "kv_aware"} <= set(policy_names())
    with pytest.raises(ValueError, match="unknown routing policy 'nope'"):
        create_policy("nope")


def test_round_robin_cycles_through_workers_in_name_order():
    ws = [WorkerView("b", None, healthy=True), WorkerView("a", None, healthy=True)]
    rr = create_policy("round_robin")
    assert [rr.pick(ws, _ctx([1, 2])).name for _ in range(4)] == ["a", "b", "a", "b"]


def test_least_loaded_prefers_fewer_requests_in_flight():
    ws = [WorkerView("a", None, inflight=3), WorkerView("b", None, inflight=1)]
    assert create_policy("least_loaded").pick(ws, _ctx([1])).name == "b"


def test_kv_aware_prefers_the_worker_with_room_for_the_prompt():
    ws = [WorkerView("a", None, free_kv_blocks=10, total_kv_blocks=100),
          WorkerView("b", None, free_kv_blocks=90, total_kv_blocks=100)]
    assert create_policy("kv_aware").pick(ws, _ctx(list(range(100)))).name == "b"


def test_prefix_aware_routes_to_the_worker_holding_the_longest_prefix():
    prompt = list(range(200))
    ctx = _ctx(prompt)
    holder = WorkerView("b", None, inflight=1, cached_hashes=set(ctx.block_hashes[:8]))
    other = WorkerView("a", None, cached_hashes=set(ctx.block_hashes[:2]))
    assert create_policy("prefix_aware").pick([other, holder], ctx).name == "b"


def test_prefix_aware_gives_up_the_cache_when_the_holder_is_overloaded():
    ctx = _ctx(list(range(200)))
    holder = WorkerView("b", None, inflight=10, cached_hashes=set(ctx.block_hashes))
    idle = WorkerView("a", None)
    assert create_policy("prefix_aware", load_slack=2).pick([holder, idle], ctx).name == "a"


def test_prefix_aware_ignores_hashes_of_another_tenant():
    prompt = list(range(64))
    holder = WorkerView("b", None, inflight=1, cached_hashes=set(_ctx(prompt, b"tenant-a").block_hashes))
    idle = WorkerView("a", None)
    assert create_policy("prefix_aware").pick([holder, idle], _ctx(prompt, b"tenant-b")).name == "a"


@pytest.mark.parametrize("name", ["least_loaded", "kv_aware", "prefix_aware"])
def test_equally_idle_workers_take_turns_on_a_staggered_stream(name):
    """Each request finishes before the next arrives: every pick is a tie, and ties rotate."""
    policy = create_policy(name)
    ws = [WorkerView(f"w{i}", None, free_kv_blocks=50, total_kv_blocks=100) for i in range(2)]
    picks = [policy.pick(ws, _ctx([7000 + 16 * i + j for j in range(20)])).name
             for i in range(32)]
    assert picks.count("w0") == picks.count("w1") == 16
