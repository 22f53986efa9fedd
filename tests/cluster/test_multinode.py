"""Pools on different Ray nodes: a real 3-node Ray cluster on this machine (a head that hosts
no pool, a node that advertises the prefill pool's resource, one the decode pool's), and
`tandem serve`'s cluster joining it by address. The prefill and decode actors land on their
own nodes (asserted from Ray's state), the KV crosses object stores, 32 concurrent streams
equal the offline engine's, and `tandem status` shows each worker's node."""
from __future__ import annotations

import os
import subprocess
import sys
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

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "Tom had a red ball", "One day, a cat"]


@pytest.fixture(scope="module")
def ray_nodes():
    from ray.cluster_utils import Cluster
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        prefill = nodes.add_node(num_cpus=1, resources={POOL_RESOURCES["prefill"]: 1})
        decode = nodes.add_node(num_cpus=1, resources={POOL_RESOURCES["decode"]: 1})
        nodes.wait_for_nodes()
        yield nodes, prefill.node_id, decode.node_id
    finally:
        import ray
        ray.shutdown()              # the serving cluster joined as a driver of this process
        nodes.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_nodes):
    nodes, _, _ = ray_nodes
    cfg = load_config(None, [f"ray.address={nodes.address}", "router.grpc_port=0", "router.http_port=0",
                             "store.enabled=false", "model.num_threads=1", "router.health_poll_s=0.2",
                             "pools.prefill.cpus_per_worker=0.5", "pools.decode.cpus_per_worker=0.5"])
    with BackgroundCluster(cfg) as c:
        yield c


def test_prefill_and_decode_run_on_their_own_nodes_and_serve_exactly(ray_nodes, cluster):
    import ray
    _, prefill_node, decode_node = ray_nodes
    placed = {name: ray.get(handle.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
              for pool in cluster.cluster.pools.values() for name, handle in pool.handles.items()}
    assert placed == {"tandem-prefill-0": prefill_node, "tandem-decode-0": decode_node}   # Ray's placement

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
    nodes = {w.worker_id: w.node for p in info.pools for w in p.workers}
    assert nodes == {"tandem-prefill-0": prefill_node, "tandem-decode-0": decode_node}


def test_tandem_status_shows_each_workers_node(ray_nodes, cluster):
    _, prefill_node, decode_node = ray_nodes
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "status", "--target", cluster.target],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  tandem-")}
    assert f"node={prefill_node[:12]}" in lines["tandem-prefill-0"]
    assert f"node={decode_node[:12]}" in lines["tandem-decode-0"]
