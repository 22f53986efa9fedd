"""Prefix hit rate with two routers vs one, on the Mooncake conversation trace.

    .venv/bin/python -m benchmarks.two_router_prefix                  # ~5 min
    .venv/bin/python -m benchmarks.two_router_prefix --requests 400 --reps 3 --rate 6

Each router routes prefill by prefix (``prefix_aware``) from its own view: the chain hashes
the workers report (every ``router.health_poll_s``) plus what it sent where since their last
report. With two routers each sees only half of the latter, so a conversation's next turn may
land on a worker that does not hold its prefix. This measures what that costs: the share of
prompt tokens served from a worker's prefix cache (``usage.cached_prompt_tokens`` /
``prompt_tokens``) when the same trace slice is sent through one router, and through two
(requests alternating between them, as a round-robin client or Service would).

Setup: stories260K, 2 prefill workers + 1 decode worker on a Ray cluster of this machine, the
global store off (so every hit is a local prefix-cache hit, the part routing decides), a
fresh cluster per run. The trace's rows are replayed open-loop at ``--rate`` with their
prompts scaled to the model's context (hash blocks keep the trace's prefix sharing; the
loadtest's replay does the mapping). Layouts alternate run by run (one, two, one, two...).
Prints one JSON line per run and a summary: median hit rate per layout and the difference.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

for _k, _v in {"LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1", "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

from cluster.config import load_config                       # noqa: E402
from cluster.ray_runtime import POOL_RESOURCES               # noqa: E402
from cluster.testing import BackgroundCluster                # noqa: E402
from loadtest.replay import TraceTransform, TraceWorkload    # noqa: E402
from loadtest.targets.base import TargetInfo                 # noqa: E402
from loadtest.traces import load_trace                       # noqa: E402
from tandem_client import TandemClient                       # noqa: E402

SETTINGS = ["store.enabled=false", "router.admission.enabled=false", "model.num_threads=1",
            "pools.prefill.workers=2", "pools.decode.workers=1", "pools.prefill.cpus_per_worker=0.5",
            "pools.decode.cpus_per_worker=0.5", "router.grpc_port=0"]


def requests(args) -> list[tuple[float, list[int], int]]:
    """(offset s, prompt ids, max tokens) of the trace slice, fitted to stories260K."""
    trace = load_trace("mooncake-conv", start=args.start, limit=args.requests)
    workload = TraceWorkload(trace, TraceTransform(rate=args.rate, input_scale=args.input_scale,
                                                   max_output=args.max_output), seed=0)
    plan = workload.plan(TargetInfo("stories260K", vocab_size=512, max_model_len=512, block_size=16))
    out = []
    for session, offset in zip(plan.sessions, plan.start_offsets):
        spec = session.spec
        out.append((offset, spec.token_ids, max(1, spec.max_tokens)))
    return out


def run(layout: str, address: str, reqs, args) -> dict:
    cfg = load_config(None, [f"ray.address={address}", f"router.health_poll_s={args.poll_s}", *SETTINGS])
    with BackgroundCluster(cfg) as first:
        routers = [first]
        if layout == "two":
            routers.append(BackgroundCluster(cfg, attach_only=True).start())
        try:
            clients = [TandemClient(r.target, timeout=300) for r in routers]
            results: list[tuple[int, int]] = []
            lock = threading.Lock()

            def send(i: int, ids: list[int], max_tokens: int) -> None:
                res = clients[i % len(clients)].generate(token_ids=ids, max_tokens=max_tokens,
                                                         temperature=0, ignore_eos=True)
                with lock:
                    results.append((res.usage.prompt_tokens, res.usage.cached_prompt_tokens))

            t0 = time.monotonic()
            with ThreadPoolExecutor(32) as pool:
                futures = []
                for i, (offset, ids, max_tokens) in enumerate(reqs):
                    time.sleep(max(0.0, t0 + offset - time.monotonic()))
                    futures.append(pool.submit(send, i, ids, max_tokens))
                for f in futures:
                    f.result()
            for c in clients:
                c.close()
        finally:
            for r in routers[1:]:
                r.stop()
    prompt = sum(p for p, _ in results)
    cached = sum(c for _, c in results)
    return {"bench": "two_router_prefix", "layout": layout, "requests": len(results),
            "prompt_tokens": prompt, "cached_tokens": cached, "hit_rate": cached / prompt if prompt else 0.0,
            "wall_s": round(time.monotonic() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--start", type=int, default=0, help="first trace row")
    ap.add_argument("--rate", type=float, default=4.0, help="requests/s (the trace's timing, rescaled)")
    ap.add_argument("--input-scale", type=float, default=0.03, help="prompt length factor (Mooncake -> 512 ctx)")
    ap.add_argument("--max-output", type=int, default=16)
    ap.add_argument("--poll-s", type=float, default=1.0, help="router.health_poll_s (the default)")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    reqs = requests(args)
    from ray.cluster_utils import Cluster
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False,
        "resources": {POOL_RESOURCES["prefill"]: 2, POOL_RESOURCES["decode"]: 1}})
    rows = []
    try:
        for rep in range(args.reps):
            for layout in ("one", "two") if rep % 2 == 0 else ("two", "one"):
                row = {**run(layout, nodes.address, reqs, args), "rep": rep, "rate": args.rate,
                       "poll_s": args.poll_s}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        import ray
        ray.shutdown()
        nodes.shutdown()
    med = {layout: statistics.median(r["hit_rate"] for r in rows if r["layout"] == layout) for layout in ("one", "two")}
    print(json.dumps({"bench": "two_router_prefix", "summary": True, "hit_rate_one": med["one"],
                      "hit_rate_two": med["two"], "difference_points": 100 * (med["two"] - med["one"]),
                      "requests": args.requests, "rate": args.rate, "reps": args.reps}), flush=True)


if __name__ == "__main__":
    main()
