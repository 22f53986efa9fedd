"""Failover between two routers: how long a stream stalls when its router is SIGKILLed.

    .venv/bin/python -m benchmarks.router_failover                 # ~2 min
    .venv/bin/python -m benchmarks.router_failover --rounds 5 --clients 24

One Ray cluster on this machine (a head with both pools' resources), the pools started by a
router in this process (`tandem serve --ray-address`, stories260K, 1 prefill + 1 decode
worker, one thread each) and a second router in its own process (`tandem router`). Clients
stream greedy requests in a closed loop through the SDK given both routers. Each round
starts a fresh second router, runs the load, SIGKILLs that router mid-load, runs on, and
stops the load. Per stream: the gaps between its deltas. A stream that was on the killed
router resumes through the other (``GenerateRequest.resume``): its longest gap is its
failover time. The baseline, same round and load: the longest gap of the streams that never
failed over. Every output is checked against the offline engine (none lost, none wrong).

Prints one JSON line per round and a summary line (medians over rounds of the per-round
p50/p99 failover time, and of the baseline's p99).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

for _k, _v in {"LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1", "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

from cluster.config import load_config                       # noqa: E402
from cluster.ray_runtime import POOL_RESOURCES               # noqa: E402
from cluster.testing import BackgroundCluster                # noqa: E402
from engine import LLM, SamplingParams                       # noqa: E402
from tandem_client import TandemClient                       # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "Tom had a red ball", "One day, a cat",
           "The sun was shining", "A little bird sang"]
SETTINGS = ["store.enabled=false", "router.admission.enabled=false", "model.num_threads=1",
            "router.health_poll_s=0.2", "pools.prefill.cpus_per_worker=0.5", "pools.decode.cpus_per_worker=0.5"]


def _percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _second_router(address: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "router", "--ray-address", address,
                             "--port", str(port), "--no-http", *sum((["--set", s] for s in SETTINGS), [])],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    with TandemClient(target, timeout=10, retries=0) as probe:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the second router exited with {proc.returncode}")
            try:
                probe.generate(PROMPTS[0], max_tokens=2, temperature=0)
                return proc, target
            except Exception:
                time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the second router did not start in 120 s")


def run_round(first: str, address: str, want: dict, args, rng: random.Random) -> dict:
    proc, second = _second_router(address)
    streams: list[dict] = []
    stop = threading.Event()
    errors: list[str] = []
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
    with TandemClient([first, second], timeout=120, retries=8, backoff_base_s=0.02, backoff_max_s=0.5,
                      options=options) as client:
        def loop(seed: int) -> None:
            r = random.Random(seed)
            while not stop.is_set():
                prompt = r.choice(PROMPTS)
                stamps, got = [], []
                stream = client.stream(prompt, max_tokens=args.tokens, temperature=0, ignore_eos=True)
                try:
                    for delta in stream:
                        stamps.append(time.perf_counter())
                        got += delta.token_ids
                except Exception as exc:          # a lost request: counted, not hidden
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                gaps = [1000 * (b - a) for a, b in zip(stamps, stamps[1:])]
                streams.append({"resumed": stream._attempt > 0 and len(stamps) > 1,
                                "max_gap_ms": max(gaps, default=0.0), "ok": got == want[prompt]})

        threads = [threading.Thread(target=loop, args=(rng.random(),), daemon=True) for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(args.before_s)
        killed_at = len(streams)
        proc.send_signal(signal.SIGKILL)
        time.sleep(args.after_s)
        stop.set()
        for t in threads:
            t.join(120)
    proc.wait(30)
    resumed = [s["max_gap_ms"] for s in streams if s["resumed"]]
    steady = [s["max_gap_ms"] for s in streams[:killed_at] if not s["resumed"]]
    return {"requests": len(streams), "lost": len(errors), "wrong": sum(not s["ok"] for s in streams),
            "resumed": len(resumed), "failover_p50_ms": _percentile(resumed, 50),
            "failover_p99_ms": _percentile(resumed, 99), "failover_max_ms": max(resumed, default=None),
            "baseline_max_gap_p99_ms": _percentile(steady, 99), "errors": errors[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--before-s", type=float, default=4.0, help="load before the kill")
    ap.add_argument("--after-s", type=float, default=4.0, help="load after the kill")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    want = {p: o.token_ids for p, o in zip(PROMPTS, LLM("stories260K").generate(
        PROMPTS, SamplingParams(temperature=0, max_tokens=args.tokens, ignore_eos=True)))}
    from ray.cluster_utils import Cluster
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False,
        "resources": {POOL_RESOURCES["prefill"]: 1, POOL_RESOURCES["decode"]: 1}})
    rows = []
    try:
        cfg = load_config(None, [f"ray.address={nodes.address}", "router.grpc_port=0", "router.http_port=0",
                                 *SETTINGS])
        with BackgroundCluster(cfg) as first:
            for i in range(args.rounds):
                row = {"bench": "router_failover", "round": i, "clients": args.clients, "tokens": args.tokens,
                       **run_round(first.target, nodes.address, want, args, rng)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        import ray
        ray.shutdown()
        nodes.shutdown()

    def med(key):
        vals = [r[key] for r in rows if r[key] is not None]
        return statistics.median(vals) if vals else None
    print(json.dumps({"bench": "router_failover", "summary": True, "rounds": len(rows),
                      "lost": sum(r["lost"] for r in rows), "wrong": sum(r["wrong"] for r in rows),
                      "resumed": sum(r["resumed"] for r in rows), "failover_p50_ms": med("failover_p50_ms"),
                      "failover_p99_ms": med("failover_p99_ms"), "failover_max_ms": med("failover_max_ms"),
                      "baseline_max_gap_p99_ms": med("baseline_max_gap_p99_ms")}), flush=True)


if __name__ == "__main__":
    main()
