"""Pools on different Ray nodes: a real Ray cluster of four nodes on this machine (a head that
hosts no pool, a node that advertises the prefill pool's resource, two the decode pool's),
and `tandem serve`'s cluster joining it by address. The prefill and decode actors land on
their own nodes (asserted from Ray's state), the KV crosses object stores, 32 concurrent
streams equal the offline engine's, and `tandem status` shows each worker's node. Then a
whole decode node is killed mid-load (its raylet and everything on it): all 32 streams, those
on it too, finish exactly through the recovery path, and a node that joins in its place brings the pool
back to full strength."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")

from cluster.config import load_config  # noqa: E402
from cluster.ray_runtime import POOL_RESOURCES  # noqa: E402
from cluster.testing import BackgroundCluster  # noqa: E402
from engine import LLM, SamplingParams  # noqa: E402
from tandem_client import TandemClient  # noqa: E402
from waiting import wait_until  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "Tom had a red ball", "One day, a cat"]


# SLO admission off: these tests send 32 streams at once and count every one; on a loaded host
# (five raylets on two cores) admission may rightly refuse some, which is not what they test
# (tests/router/test_admission.py and test_burst_admission.py do).
# Prefill overflow off: these tests check which node computes each phase.
SETTINGS = ["router.prefill_overflow=false", "store.enabled=false", "model.num_threads=1", "router.health_poll_s=0.2", "router.admission.enabled=false",
            "pools.prefill.cpus_per_worker=0.5", "pools.decode.cpus_per_worker=0.5", "pools.decode.workers=2"]


@pytest.fixture(scope="module")
def ray_nodes():
    from ray.cluster_utils import Cluster
    # Fast node-failure detection, so a dead node's actors are rescheduled within seconds.
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                           "health_check_initial_delay_ms": 0}})
    try:
        prefill = nodes.add_node(num_cpus=1, resources={POOL_RESOURCES["prefill"]: 1})
        decode = [nodes.add_node(num_cpus=1, resources={POOL_RESOURCES["decode"]: 1}) for _ in range(2)]
        nodes.wait_for_nodes()
        yield nodes, prefill.node_id, decode
    finally:
        import ray
        ray.shutdown()              # the serving cluster joined as a driver of this process
        nodes.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_nodes):
    nodes, _, _ = ray_nodes
    cfg = load_config(None, [f"ray.address={nodes.address}", "router.grpc_port=0", "router.http_port=0", *SETTINGS])
    with BackgroundCluster(cfg) as c:
        yield c


def _placed(cluster) -> dict[str, str]:
    """worker -> the Ray node its actor runs on, asked of the actors themselves."""
    import ray
    return {name: ray.get(handle.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
            for pool in cluster.cluster.pools.values() for name, handle in pool.handles.items()}


def test_prefill_and_decode_run_on_their_own_nodes_and_serve_exactly(ray_nodes, cluster):
    _, prefill_node, decode_nodes = ray_nodes
    placed = _placed(cluster)
    assert placed["tandem-prefill-0"] == prefill_node
    assert {placed["tandem-decode-0"], placed["tandem-decode-1"]} == {n.node_id for n in decode_nodes}

    want = {p: o.token_ids for p, o in zip(PROMPTS, LLM("stories260K").generate(
        PROMPTS, SamplingParams(temperature=0, max_tokens=24)))}
    with TandemClient(cluster.target, timeout=120) as client:
        def one(i: int):
            prompt = PROMPTS[i % len(PROMPTS)]
            return prompt, client.generate(prompt, max_tokens=24, temperature=0)
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, range(32)))
        info = client.cluster_info()
    assert all(res.token_ids == want[prompt] for prompt, res in results)
    assert {res.usage.prefill_worker for _, res in results} == {"tandem-prefill-0"}
    assert {res.usage.decode_worker for _, res in results} == {"tandem-decode-0", "tandem-decode-1"}
    assert {w.worker_id: w.node for p in info.pools for w in p.workers} == placed


def test_tandem_status_shows_each_workers_node(cluster):
    placed = _placed(cluster)
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "status", "--target", cluster.target],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  tandem-")}
    assert sorted(lines) == sorted(placed)
    assert all(f"node={placed[w][:12]}" in line for w, line in lines.items())


def test_tandem_router_serves_from_the_running_pools_and_leaves_them_running(ray_nodes, cluster):
    nodes, _, _ = ray_nodes
    cfg = load_config(None, [f"ray.address={nodes.address}", "router.grpc_port=0", *SETTINGS])
    with BackgroundCluster(cfg, attach_only=True) as second:
        assert not any(p.owned for p in second.cluster.pools.values())
        with TandemClient(second.target, timeout=120) as client:
            assert len(client.generate(PROMPTS[0], max_tokens=6, temperature=0).token_ids) == 6
    with TandemClient(cluster.target, timeout=120) as client:      # the pools outlived it
        assert len(client.generate(PROMPTS[1], max_tokens=6, temperature=0).token_ids) == 6
    # With no pools to attach to (another namespace), `tandem router` says so and exits 2.
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "router", "--ray-address", nodes.address,
                          "--set", "ray.namespace=no-pools-here", "--port", "0", "--no-http"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "tandem: error: no running prefill pool of 1 worker(s) in Ray namespace 'no-pools-here'" in out.stderr


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HA = ["ray.namespace=ha", "store.enabled=false", "pools.decode.workers=1", "router.health_poll_s=0.2",
      "router.admission.enabled=false", "model.num_threads=1", "pools.prefill.cpus_per_worker=0.5",
      "pools.decode.cpus_per_worker=0.5"]


@pytest.fixture
def ha_node(ray_nodes):
    """A node for pools of their own (Ray namespace "ha"); at the end they are stopped and the
    node goes (a pool left behind would take the place of the module's own)."""
    nodes, _, _ = ray_nodes
    node = nodes.add_node(num_cpus=1, resources={POOL_RESOURCES["prefill"]: 1, POOL_RESOURCES["decode"]: 1})
    nodes.wait_for_nodes()
    yield nodes.address
    from cluster.pools import stop_pools
    stop_pools(load_config(None, [f"ray.address={nodes.address}", *HA]))
    nodes.remove_node(node, allow_graceful=True)


def test_two_routers_the_one_that_made_the_pools_killed_mid_stream_lose_nothing(ha_node, caplog):
    """`tandem serve` (its own process) creates pools on a node of their own (another Ray
    namespace); a second router attaches; 32 streams spread over both; the first is SIGKILLed
    while every stream is mid-flight. The pools outlive it (detached, placement group too),
    its streams resume through the second (the decode worker still holds them): none lost,
    none repeated."""
    import logging
    import signal
    caplog.set_level(logging.INFO, logger="router.backends.ray_pools")
    port = _free_port()
    first = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "serve", "--ray-address", ha_node, "--port", str(port),
         "--no-http", *sum((["--set", s] for s in HA), [])],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        target = f"127.0.0.1:{port}"
        with TandemClient(target, timeout=120) as probe:
            wait_until(lambda: first.poll() is not None or _serves(probe), 180, "`tandem serve` to serve")
        assert first.poll() is None, first.stderr.read()[-3000:]
        cfg = load_config(None, [f"ray.address={ha_node}", "router.grpc_port=0", *HA])
        with BackgroundCluster(cfg, attach_only=True) as second:
            tokens = 160
            want = {p: o.token_ids for p, o in zip(PROMPTS, LLM("stories260K").generate(
                PROMPTS, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)))}
            started = threading.Barrier(33)
            options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
            with TandemClient([target, second.target], timeout=120, retries=8, backoff_base_s=0.02,
                              backoff_max_s=0.5, options=options) as client:
                def one(i: int):
                    prompt, got, waited = PROMPTS[i % len(PROMPTS)], [], False
                    stream = client.stream(prompt, max_tokens=tokens, temperature=0, ignore_eos=True)
                    for delta in stream:
                        got += delta.token_ids
                        if not waited and len(got) >= 4:       # mid-flight, on one router or the other
                            waited = True
                            started.wait(60)
                    return prompt, got, stream.result
                with ThreadPoolExecutor(32) as pool:
                    futures = [pool.submit(one, i) for i in range(32)]
                    started.wait(60)
                    first.send_signal(signal.SIGKILL)
                    results = [f.result(timeout=120) for f in futures]
                assert all(got == want[prompt] for prompt, got, _ in results)      # none lost, none repeated
                assert all(res.token_ids == want[prompt] and res.usage.completion_tokens == tokens
                           for prompt, _, res in results)
                resumed = [r for r in caplog.records if "resumes after" in r.getMessage()]
                assert 1 <= len(resumed) <= 32, "the killed router's streams resumed through this one"
                assert all("held by tandem-decode-0" in r.getMessage() for r in resumed)
                again = client.generate(PROMPTS[1], max_tokens=8, temperature=0)   # the pools live on
                assert again.token_ids == want[PROMPTS[1]][:8]
                wait_until(lambda: all(w.running_requests == 0 for p in client.cluster_info().pools
                                       for w in p.workers), 60, "every worker to be idle again")
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(30)


def test_kept_pools_outlive_their_router_refuse_another_config_and_stop_on_request(ha_node):
    import ray
    from cluster.pools import stop_pools
    cfg = load_config(None, [f"ray.address={ha_node}", "router.grpc_port=0", "ray.keep_pools=true", *HA])
    stop_pools(cfg)                                      # a clean slate in this namespace
    # Two routers start at once (a Deployment's replicas): one creates the pools, the other
    # waits for them and attaches; both serve, from one set of pools.
    routers = [BackgroundCluster(cfg), BackgroundCluster(cfg)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda r: r.start(), routers))
    try:
        assert all(p.owned is False for r in routers for p in r.cluster.pools.values())
        assert {n for r in routers for p in r.cluster.pools.values() for n in p.names} == \
            {"tandem-prefill-0", "tandem-decode-0"}
        for r in routers:
            with TandemClient(r.target, timeout=120) as client:
                assert len(client.generate(PROMPTS[0], max_tokens=4, temperature=0).token_ids) == 4
    finally:
        for r in routers:
            r.stop()
    pools = {n: ray.get_actor(n, namespace="ha") for n in ("tandem-prefill-0", "tandem-decode-0")}
    first_decode = ray.get(pools["tandem-decode-0"].ping.remote(), timeout=60)   # they outlived them
    assert ray.get(pools["tandem-prefill-0"].ping.remote(), timeout=60)
    base = [sys.executable, "-m", "cluster.cli"]
    other = HA + ["ray.keep_pools=true", "pools.decode.max_restarts=7"]

    def cli(command, settings):
        return subprocess.run(base + [command, "--ray-address", ha_node, "--port", "0", "--no-http",
                                      *sum((["--set", s] for s in settings), [])],
                              cwd=REPO, capture_output=True, text=True, timeout=180)
    refused = cli("router", other)                        # another config, attach only: refused
    assert refused.returncode == 2
    assert "the running decode pool in Ray namespace 'ha' was started with another config" in refused.stderr
    # A higher generation of another config replaces the pool that differs and keeps the other.
    newer = load_config(None, [f"ray.address={ha_node}", "router.grpc_port=0", *other, "ray.pools_generation=1"])
    with BackgroundCluster(newer) as upgraded, TandemClient(upgraded.target, timeout=120) as client:
        assert len(client.generate(PROMPTS[0], max_tokens=4, temperature=0).token_ids) == 4
        decode = ray.get_actor("tandem-decode-0", namespace="ha")
        assert ray.get(decode.ping.remote(), timeout=60) != first_decode, "a new decode worker"
    stale = cli("serve", HA + ["ray.keep_pools=true"])   # the old config, generation 0: refused
    assert stale.returncode == 2
    assert "its ray.pools_generation is 1, this router's 0" in stale.stderr
    out = subprocess.run(base + ["stop-pools", "--ray-address", ha_node, "--set", "ray.namespace=ha"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("stopped tandem-prefill-0, ha/tandem-prefill/")
    assert ", tandem-decode-0, ha/tandem-decode/" in out.stdout and "/g1" in out.stdout
    for name in pools:
        wait_until(lambda: _gone(name, "ha"), 30, f"{name} to stop")


def _gone(name: str, namespace: str) -> bool:
    import ray
    try:
        ray.get_actor(name, namespace=namespace)
        return False
    except ValueError:
        return True


def _serves(client) -> bool:
    try:
        return len(client.generate(PROMPTS[0], max_tokens=2, temperature=0, timeout=10).token_ids) == 2
    except Exception:
        return False


def test_a_decode_node_killed_mid_load_loses_no_request_and_a_new_node_restores_the_pool(ray_nodes, cluster,
                                                                                        caplog):
    import logging
    caplog.set_level(logging.WARNING, logger="router.backends.ray_pools")
    nodes, _, decode_nodes = ray_nodes
    placed = _placed(cluster)
    victim = next(n for n in decode_nodes if n.node_id == placed["tandem-decode-0"])
    tokens = 160
    want = {p: o.token_ids for p, o in zip(PROMPTS, LLM("stories260K").generate(
        PROMPTS, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)))}
    started = threading.Barrier(33)
    with TandemClient(cluster.target, timeout=120) as client:
        def one(i: int):
            prompt, got, waited = PROMPTS[i % len(PROMPTS)], [], False
            for delta in client.stream(prompt, max_tokens=tokens, temperature=0, ignore_eos=True):
                got += delta.token_ids
                if not waited and len(got) >= 4:       # in flight on its decode worker
                    waited = True
                    started.wait(60)
            return prompt, got
        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(one, i) for i in range(32)]
            started.wait(60)
            # Hold the victim's engine thread so its streams are still mid-flight when the node
            # goes (stories260K would otherwise finish them while the kill propagates).
            import ray
            ray.get(cluster.cluster.pools["decode"].handles["tandem-decode-0"].__ray_call__.remote(
                lambda self: self.driver.submit(lambda engine: time.sleep(30)) and None), timeout=30)
            nodes.remove_node(victim, allow_graceful=False)     # its raylet and every process on it
            results = [f.result(timeout=120) for f in futures]
        assert all(got == want[prompt] for prompt, got in results)     # none lost, none repeated
        recovered = [r for r in caplog.records if "re-prefilling" in r.getMessage()]
        assert 1 <= len(recovered) <= 32, "the killed node held requests, recovered elsewhere"
        wait_until(lambda: any(w.worker_id == "tandem-decode-0" and w.health != "healthy"
                               for p in client.cluster_info().pools for w in p.workers), 60,
                   "the router to see decode-0 gone")
        replacement = nodes.add_node(num_cpus=1, resources={POOL_RESOURCES["decode"]: 1})
        wait_until(lambda: {(w.worker_id, w.health, w.node) for p in client.cluster_info().pools
                            for w in p.workers if w.worker_id == "tandem-decode-0"}
                   == {("tandem-decode-0", "healthy", replacement.node_id)}, 90,
                   "decode-0 to come back on the new node")
        again = client.generate(PROMPTS[0], max_tokens=8, temperature=0)
        assert again.token_ids == want[PROMPTS[0]][:8]
