"""Live role switching on a real cluster (Ray pools of switchable workers, redis, gRPC): workers
switch between prefill and decode while streams run, and no request is lost, duplicated or
changed, no KV block leaks; the controller reacts to a burst's prefill queue."""
from __future__ import annotations

import os
import threading
import time

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from cluster.config import load_config  # noqa: E402
from cluster.testing import BackgroundCluster  # noqa: E402
from engine import LLM, SamplingParams  # noqa: E402
from tandem_client.errors import TandemError  # noqa: E402
from waiting import wait_until  # noqa: E402

PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "The little dog was sad because",
           "Tom had a red ball", "One day, a cat", "The sun was shining and", "Sara wanted to",
           "There was a big tree"]


@pytest.fixture(scope="module")
def cluster():
    # One prefill and two decode workers, all switchable. The controller runs every 0.3 s
    # with no cooldown or dwell; the objectives make only a prefill queue count (a TTFT
    # objective of 5 ms, a TPOT objective no step misses, KV never "full"), so the only
    # switch it makes is decode -> prefill, when prompts queue.
    cfg = load_config(None, [
        "mode=disaggregated", "router.grpc_port=0", "router.admission.enabled=false",
        "pools.prefill.workers=1", "pools.decode.workers=2", "pools.prefill.cpus_per_worker=0.25",
        "pools.decode.cpus_per_worker=0.25", "model.num_threads=1", "model.max_num_seqs=64",
        "router.health_poll_s=0.2", "router.metrics_port=0", "rebalance.enabled=true", "rebalance.interval_s=0.3",
        "rebalance.cooldown_s=0", "rebalance.min_dwell_s=0", "rebalance.sustain=2",
        "slo.ttft_ms=5", "slo.tpot_ms=100000", "rebalance.kv_high=1"])
    with BackgroundCluster(cfg) as c:
        yield c


def _roles(cluster) -> dict[str, str]:
    return {name: role for role, pool in cluster.backend.registry.views.items() for name in pool}


def _free_blocks(cluster) -> dict[str, int]:
    cluster.call(cluster.backend.registry.refresh_once())
    return {v.name: v.free_kv_blocks for pool in cluster.backend.registry.views.values() for v in pool.values()}


def _run_streams(client, jobs: list[tuple[str, int]], results: dict, errors: list) -> list[threading.Thread]:
    def one(i: int, prompt: str, max_tokens: int) -> None:
        try:
            results[i] = list(client.generate(prompt, max_tokens=max_tokens, temperature=0.0).token_ids)
        except TandemError as exc:
            errors.append((i, exc))
    threads = [threading.Thread(target=one, args=(i, p, n)) for i, (p, n) in enumerate(jobs)]
    for t in threads:
        t.start()
    return threads


def test_workers_switch_roles_under_load_losing_changing_and_leaking_nothing(cluster, client):
    rebalancer = cluster.cluster.rebalancer
    start_blocks = _free_blocks(cluster)
    jobs = [(PROMPTS[i % len(PROMPTS)], 60 + (i % 5) * 20) for i in range(32)]
    offline = LLM("stories260K", max_num_seqs=64).generate(
        [p for p, _ in jobs], [SamplingParams(temperature=0.0, max_tokens=n) for _, n in jobs])
    results: dict[int, list[int]] = {}
    errors: list = []
    threads = _run_streams(client, jobs, results, errors)
    # While the streams run: every worker changes role at least once, in an order that always
    # leaves one worker in each role, and some twice.
    switched = []
    for worker, role in [("tandem-decode-1", "prefill"), ("tandem-prefill-0", "decode"),
                         ("tandem-decode-1", "decode"), ("tandem-decode-0", "prefill"),
                         ("tandem-prefill-0", "prefill"), ("tandem-decode-0", "decode")]:
        time.sleep(0.15)
        if _roles(cluster)[worker] != role:
            try:
                cluster.call(rebalancer.switch(worker, role, "test"))
                switched.append((worker, role))
            except ValueError:     # the controller moved another one first: keep one per role
                pass
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(switched) >= 3
    # Each request's tokens exactly once, equal to the offline engine's (greedy).
    assert {i: results[i] for i in range(len(jobs))} == {i: o.token_ids for i, o in enumerate(offline)}
    roles = _roles(cluster)
    assert set(roles.values()) == {"prefill", "decode"}
    # Every block comes back: the old role's requests finished where they were.
    wait_until(lambda: _free_blocks(cluster) == start_blocks, timeout=30, what="KV blocks back")
    # The switches are what the workers announce: a fresh report keeps each where it is.
    cluster.call(cluster.backend.registry.refresh_once())
    assert _roles(cluster) == roles


def test_a_switch_that_would_empty_a_pool_is_refused_with_the_reason(cluster):
    rebalancer = cluster.cluster.rebalancer
    roles = _roles(cluster)
    lone = [w for w, r in roles.items() if list(roles.values()).count(r) == 1]
    if not lone:      # two in one role, one in the other: there is always a lone one
        pytest.fail(f"unexpected roles {roles}")
    other = "decode" if roles[lone[0]] == "prefill" else "prefill"
    with pytest.raises(ValueError, match="would leave fewer than 1 healthy"):
        cluster.call(rebalancer.switch(lone[0], other))
    with pytest.raises(ValueError, match="role must be prefill or decode"):
        cluster.call(rebalancer.switch(lone[0], "colocated"))
    with pytest.raises(ValueError, match="no worker"):
        cluster.call(rebalancer.switch("tandem-nobody", "decode"))


def test_the_controller_moves_a_decode_worker_to_prefill_when_a_burst_queues_prompts(cluster, client):
    rebalancer = cluster.cluster.rebalancer
    # Back to one prefill worker (the previous tests may have left two).
    for name, role in sorted(_roles(cluster).items()):
        if role == "prefill" and len(cluster.backend.registry.healthy("prefill")) > 1:
            cluster.call(rebalancer.switch(name, "decode", "test reset"))
    before = len(rebalancer.policy.history)
    long_prompt = " ".join(PROMPTS * 6)
    results: dict[int, list[int]] = {}
    errors: list = []
    began = time.monotonic()
    threads = _run_streams(client, [(long_prompt, 4)] * 160, results, errors)
    wait_until(lambda: len(rebalancer.policy.history) > before, timeout=20, what="a rebalancing decision")
    reacted = time.monotonic() - began
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 160
    decision = rebalancer.policy.history[before]
    assert (decision.from_role, decision.to_role) == ("decode", "prefill")
    assert decision.pressure.prefill_queue_s > 0.005 and "prefill pressure" in decision.reason
    assert reacted <= 10.0, f"reacted after {reacted:.1f} s"
    assert len(set(map(tuple, results.values()))) == 1     # the same prompt, greedy: one answer


def test_every_decision_is_exported_with_its_inputs(cluster):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    port = cluster.cluster.server.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    rebalancer = cluster.cluster.rebalancer
    made = [(d.from_role, d.to_role) for d in rebalancer.policy.history]
    # The test switches above went through the controller too: at least as many as it decided.
    assert samples[("tandem_rebalance_switches_total", (("from_role", "decode"), ("to_role", "prefill")))] \
        >= made.count(("decode", "prefill")) >= 1
    for pool in ("prefill", "decode"):
        assert ("tandem_rebalance_pressure", (("pool", pool),)) in samples
    for name in ("tandem_rebalance_prefill_queue_seconds", "tandem_rebalance_decode_step_ms",
                 "tandem_rebalance_decode_kv_use"):
        assert (name, ()) in samples


def _reset_to_one_prefill(cluster) -> None:
    rebalancer = cluster.cluster.rebalancer
    for name, role in sorted(_roles(cluster).items()):
        if role == "prefill" and len(cluster.backend.registry.healthy("prefill")) > 1:
            cluster.call(rebalancer.switch(name, "decode", "test reset"))


def test_a_second_router_does_not_switch_within_the_cooldown_another_router_claimed(cluster, caplog):
    import dataclasses
    import logging

    from cluster.rebalance.controller import RebalanceController
    from cluster.rebalance.lease import SwitchLease
    _reset_to_one_prefill(cluster)
    before = _roles(cluster)
    # Two routers' controllers that both read a prefill queue (the router's admission holds
    # a million prompt tokens) and would each move a decode worker to prefill at once.
    cfg = dataclasses.replace(cluster.cluster.cfg.rebalance, sustain=1, cooldown_s=60.0)
    lease = SwitchLease()
    assert lease.claim("router-a", cfg.cooldown_s)     # router a switched a worker just now
    second = RebalanceController(cluster.backend.registry, cfg, 5.0, 100000.0,
                                 router_queued_tokens=lambda: 1_000_000, lease=lease, name="router-b")
    with caplog.at_level(logging.INFO, logger="cluster.rebalance.controller"):
        assert cluster.call(second.tick()) is None
    assert len(second.policy.history) == 1                # it wanted to switch ...
    assert "another router switched a worker within the cooldown" in caplog.text
    assert _roles(cluster) == before                      # ... and switched nothing
    assert lease.holder == "router-a"
    # The same controller with the lease to itself switches.
    alone = RebalanceController(cluster.backend.registry, cfg, 5.0, 100000.0,
                                router_queued_tokens=lambda: 1_000_000, name="router-c")
    decision = cluster.call(alone.tick())
    assert decision is not None and (decision.from_role, decision.to_role) == ("decode", "prefill")
    assert _roles(cluster)[decision.worker] == "prefill"
    _reset_to_one_prefill(cluster)


def test_every_router_of_a_namespace_shares_one_lease_actor(cluster):
    import ray

    from cluster.rebalance.lease import LEASE_NAME, ray_lease
    cfg = cluster.cluster.cfg
    shared = ray.get_actor(LEASE_NAME, namespace=cfg.ray.namespace)
    assert cluster.cluster.rebalancer.lease._actor_id == shared._actor_id
    again = ray_lease(cfg.ray.namespace, detached=False)   # what a second router gets
    assert again._actor_id == shared._actor_id
    assert ray.get(again.claim.remote("router-a", 0.0), timeout=30)
    assert not ray.get(shared.claim.remote("router-b", 60.0), timeout=30)
    assert ray.get(again.claim.remote("router-b", 0.0), timeout=30)
