"""The first inter-token gap at low load, disaggregated vs colocated, and where it goes.

    .venv/bin/python -m benchmarks.first_gap                 # ~2 min
    .venv/bin/python -m benchmarks.first_gap --prompt 1000 --reps 3
    .venv/bin/python -m benchmarks.first_gap --cross-node    # + disaggregated over two Ray nodes

One request at a time (no queueing), streamed through the SDK against a fresh cluster per
mode (``llama-8m``, one thread per worker, the layouts of ``benchmarks.disagg_vs_colocated``),
modes interleaved round by round. For each request: TTFT, the gap between the first and the
second token (disaggregated: the KV hand-off, its import and one decode step; colocated: one
decode step), and the mean later gap. In disaggregated mode the prefill worker's own
timings say how long exporting and shipping took. Prints one JSON line per mode and round,
then the medians and the disaggregated / colocated ratio of the first gap.

``--cross-node`` adds ``disaggregated-cross-node``: the same 1P+1D layout on a Ray cluster of
three nodes on this machine (a head, a node with the prefill pool's resource, one with the
decode pool's), so the KV crosses object stores as between machines (without a network).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import time

for _k, _v in {"LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1", "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

from benchmarks.disagg_vs_colocated import COMMON, MODES      # noqa: E402
from cluster.config import load_config                       # noqa: E402
from cluster.testing import BackgroundCluster                # noqa: E402
from tandem_client import TandemClient                       # noqa: E402


def _one(client: TandemClient, ids: list[int], max_tokens: int) -> dict:
    t0 = time.perf_counter()
    stamps = []
    for delta in client.stream(token_ids=ids, max_tokens=max_tokens, temperature=0, ignore_eos=True):
        stamps += [time.perf_counter()] * max(1, len(delta.token_ids))
    gaps = [1000 * (b - a) for a, b in zip(stamps, stamps[1:]) if b > a]
    return {"ttft_ms": 1000 * (stamps[0] - t0), "first_gap_ms": gaps[0] if gaps else None,
            "later_gap_ms": statistics.fmean(gaps[1:]) if len(gaps) > 1 else None}


def run_round(mode: str, args, rng: random.Random) -> dict:
    if mode == "disaggregated-cross-node":
        with _two_nodes() as address:
            return _measure(mode, load_config(None, COMMON + MODES["disaggregated"] + [
                "router.health_poll_s=0.2", f"ray.address={address}", "pools.prefill.cpus_per_worker=0.5",
                "pools.decode.cpus_per_worker=0.5"]), args, rng)
    return _measure(mode, load_config(None, COMMON + MODES[mode] + ["router.health_poll_s=0.2"]), args, rng)


@contextlib.contextmanager
def _two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    from cluster.ray_runtime import POOL_RESOURCES
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for role in ("prefill", "decode"):
            nodes.add_node(num_cpus=1, resources={POOL_RESOURCES[role]: 1})
        nodes.wait_for_nodes()
        yield nodes.address
    finally:
        ray.shutdown()
        nodes.shutdown()


def _measure(mode: str, cfg, args, rng: random.Random) -> dict:
    with BackgroundCluster(cfg) as bg, TandemClient(bg.target, timeout=120) as client:
        vocab = client.model_info().vocab_size
        for _ in range(3):                          # warm-up: first calls pay imports and JIT
            _one(client, [rng.randrange(3, vocab) for _ in range(args.prompt)], 4)
        rows = [_one(client, [rng.randrange(3, vocab) for _ in range(args.prompt)], args.output)
                for _ in range(args.requests)]
    med = {k: statistics.median(r[k] for r in rows if r[k] is not None) for k in rows[0]}
    return {"bench": "first_gap", "mode": mode, "prompt": args.prompt, "output": args.output,
            "requests": len(rows), **{f"{k}_p50": round(v, 2) for k, v in med.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", type=int, default=200)
    p.add_argument("--output", type=int, default=16)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--reps", type=int, default=2, help="rounds per mode, interleaved")
    p.add_argument("--cross-node", action="store_true", help="also disaggregated across two Ray nodes")
    args = p.parse_args()
    rng = random.Random(0)
    got: dict[str, list[dict]] = {"disaggregated": [], "colocated": []}
    if args.cross_node:
        got["disaggregated-cross-node"] = []
    for _ in range(args.reps):
        for mode in got:
            row = run_round(mode, args, rng)
            got[mode].append(row)
            print(json.dumps(row), flush=True)
    summary = {m: statistics.median(r["first_gap_ms_p50"] for r in rows) for m, rows in got.items()}
    out = {"bench": "first_gap", "summary": True, "prompt": args.prompt, "first_gap_ms_p50": summary,
           "disagg_over_colocated": round(summary["disaggregated"] / summary["colocated"], 2)}
    if args.cross_node:
        out["cross_node_over_same_node"] = round(summary["disaggregated-cross-node"] / summary["disaggregated"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
