"""Live P/D rebalancing against static pools, on a workload whose shape shifts mid-run.

    .venv/bin/python -m benchmarks.rebalance_shift                 # 3 configs x 3 reps, ~20 min
    .venv/bin/python -m benchmarks.rebalance_shift --reps 1 --phase-s 20   # a quicker look

Three single-thread workers of the ``llama-8m`` random-weight model on this host's cores,
disaggregated, in three deployments: static 1 prefill + 2 decode, static 2 prefill + 1
decode, and rebalancing (starts 1P+2D; ``rebalance.enabled`` with a shorter dwell and
cooldown than the defaults, printed below). One run offers three phases of Poisson arrivals:
decode-heavy (short prompts, long outputs), prefill-heavy (long prompts, a few tokens out),
decode-heavy again. The load generator is a child process (asyncio SDK client, its own
GIL); prompts are random token ids of the exact lengths. Deployments are interleaved,
repeated, and each run's goodput (requests meeting both TTFT and TPOT objectives, per
second of the run) is compared with the best static deployment of the same repetition.
Output: one JSON line per run and per phase, then the summary line (medians).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

for _k, _v in {"LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1", "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

ROOT = Path(__file__).resolve().parent.parent
MODEL = "llama-8m"
# Prefill overflow off: the static layouts are the pools as sized (what the results measured).
BASE = ["mode=disaggregated", "router.prefill_overflow=false", "router.grpc_port=0",
        "router.admission.enabled=false", "store.enabled=false",
        f"model.model={MODEL}", "model.num_threads=1", "pools.prefill.cpus_per_worker=0.5",
        "pools.decode.cpus_per_worker=0.5", "router.health_poll_s=0.5", "model.max_num_seqs=128", "model.max_model_len=1024"]
CONFIGS = {
    "static-1P2D": ["pools.prefill.workers=1", "pools.decode.workers=2"],
    "static-2P1D": ["pools.prefill.workers=2", "pools.decode.workers=1"],
    # Switchable workers that never switch: what the machinery itself costs.
    "flex-1P2D": ["pools.prefill.workers=1", "pools.decode.workers=2", "rebalance.enabled=true",
                  "rebalance.high=1000000", "rebalance.low=0"],
    "rebalance": ["pools.prefill.workers=1", "pools.decode.workers=2", "rebalance.enabled=true",
                  "rebalance.interval_s=0.5", "rebalance.min_dwell_s=8", "rebalance.cooldown_s=4"],
}


def phases(phase_s: float, decode_rate: float, prefill_rate: float) -> list[dict]:
    return [dict(name="decode-heavy", prompt=48, out=160, rate=decode_rate, seconds=phase_s),
            dict(name="prefill-heavy", prompt=900, out=6, rate=prefill_rate, seconds=phase_s),
            dict(name="decode-heavy-2", prompt=48, out=160, rate=decode_rate, seconds=phase_s)]


# -- the load generator (child process) -------------------------------------------------------
async def _drive(target: str, plan: list[dict], seed: int, vocab: int) -> list[dict]:
    from tandem_client.aio import AsyncTandemClient
    rng = random.Random(seed)
    records: list[dict] = []
    async with AsyncTandemClient(target, timeout=300) as client:
        async def one(phase: str, prompt: list[int], out: int, sent: float) -> None:
            first = last = None
            n = 0
            ok = True
            try:
                async for delta in client.stream(token_ids=prompt, max_tokens=out, temperature=0.0,
                                                 ignore_eos=True):
                    now = time.perf_counter()
                    if delta.token_ids:
                        first = first or now
                        last = now
                        n += len(delta.token_ids)
            except Exception as exc:      # counted as a miss, with its kind
                ok = False
                records.append(dict(phase=phase, ok=False, error=type(exc).__name__, message=str(exc)[:300]))
                return
            records.append(dict(phase=phase, ok=ok and n == out, ttft_ms=1000 * (first - sent),
                                tpot_ms=1000 * (last - first) / max(1, n - 1), tokens=n))

        tasks = []
        t = time.perf_counter()
        for ph in plan:
            end = t + ph["seconds"]
            while True:
                t += rng.expovariate(ph["rate"])
                if t >= end:
                    t = end
                    break
                delay = t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                prompt = [rng.randrange(3, vocab) for _ in range(ph["prompt"])]
                tasks.append(asyncio.create_task(one(ph["name"], prompt, ph["out"], time.perf_counter())))
        await asyncio.gather(*tasks)
    return records


def _child(argv: list[str]) -> int:
    target, plan_json, seed, vocab, out = argv
    records = asyncio.run(_drive(target, json.loads(plan_json), int(seed), int(vocab)))
    Path(out).write_text(json.dumps(records))
    return 0


# -- one run ------------------------------------------------------------------------------------
def run_one(name: str, plan: list[dict], seed: int, slo: tuple[float, float], scratch: Path,
            extra: list[str] = ()) -> dict:
    from cluster.config import load_config
    from cluster.testing import BackgroundCluster
    ttft, tpot = slo
    cfg = load_config(None, BASE + CONFIGS[name] + [f"slo.ttft_ms={ttft}", f"slo.tpot_ms={tpot}", *extra])
    out = scratch / f"{name}-{seed}.json"
    with BackgroundCluster(cfg) as cluster:
        vocab = cluster.call(cluster.backend.model_info()).vocab_size
        began, began_wall = time.perf_counter(), time.time()
        subprocess.run([sys.executable, "-m", "benchmarks.rebalance_shift", "--drive", cluster.target,
                        json.dumps(plan), str(seed), str(vocab), str(out)], check=True, cwd=ROOT)
        wall = time.perf_counter() - began
        switches = [] if cluster.cluster.rebalancer is None else [
            dict(worker=d.worker, to=d.to_role, at_s=round(d.at - began_wall, 1), reason=d.reason) for d in cluster.cluster.rebalancer.policy.history]
    records = json.loads(out.read_text())
    duration = sum(p["seconds"] for p in plan)
    result = dict(config=name, seed=seed, requests=len(records), wall_s=round(wall, 1), switches=switches)
    met = [r for r in records if r["ok"] and r["ttft_ms"] <= ttft and r["tpot_ms"] <= tpot]
    result["goodput_rps"] = round(len(met) / duration, 3)
    result["errors"] = sum(1 for r in records if not r["ok"])
    for ph in plan:
        rs = [r for r in records if r["phase"] == ph["name"] and r["ok"]]
        good = [r for r in met if r["phase"] == ph["name"]]
        result[ph["name"]] = dict(
            offered=sum(1 for r in records if r["phase"] == ph["name"]),
            goodput_rps=round(len(good) / ph["seconds"], 3),
            ttft_p50_ms=round(statistics.median(r["ttft_ms"] for r in rs), 1) if rs else None,
            ttft_p90_ms=round(_pct([r["ttft_ms"] for r in rs], 0.9), 1) if rs else None,
            tpot_p50_ms=round(statistics.median(r["tpot_ms"] for r in rs), 2) if rs else None,
            tpot_p90_ms=round(_pct([r["tpot_ms"] for r in rs], 0.9), 2) if rs else None)
    return result


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--drive":
        return _child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--phase-s", type=float, default=30.0)
    ap.add_argument("--decode-rate", type=float, default=7.0, help="req/s in the decode-heavy phases")
    ap.add_argument("--prefill-rate", type=float, default=5.0, help="req/s in the prefill-heavy phase")
    ap.add_argument("--ttft-ms", type=float, default=1000.0)
    ap.add_argument("--tpot-ms", type=float, default=25.0)
    ap.add_argument("--configs", default="static-1P2D,static-2P1D,rebalance")
    ap.add_argument("--settle-s", type=float, default=15.0, help="pause before each run")
    ap.add_argument("--kv-blocks", type=int, default=120,
                    help="KV blocks per worker (16 tokens each): what one worker's memory holds")
    args = ap.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("cluster.rebalance").setLevel(logging.INFO)
    plan = phases(args.phase_s, args.decode_rate, args.prefill_rate)
    scratch = ROOT / "bench-results" / "rebalance_shift"
    scratch.mkdir(parents=True, exist_ok=True)
    names = args.configs.split(",")
    print(json.dumps(dict(benchmark="rebalance_shift", model=MODEL, phases=plan, slo_ms=[args.ttft_ms, args.tpot_ms], kv_blocks=args.kv_blocks,
                          configs={n: CONFIGS[n] for n in names}, host_cpus=os.cpu_count())), flush=True)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(args.reps):
        order = names if rep % 2 == 0 else names[::-1]        # interleaved, alternating order
        for name in order:
            time.sleep(args.settle_s)      # the previous run's processes gone before the next starts
            res = run_one(name, plan, seed=100 + rep, slo=(args.ttft_ms, args.tpot_ms), scratch=scratch,
                          extra=[f"model.num_kv_blocks={args.kv_blocks}"])
            runs[name].append(res)
            print(json.dumps(dict(run=rep, **res)), flush=True)
    summary = {n: statistics.median(r["goodput_rps"] for r in rs) for n, rs in runs.items()}
    statics = [n for n in names if n.startswith("static")]
    out = dict(summary="rebalance_shift", goodput_rps_median=summary)
    if "rebalance" in summary and statics:
        best = max(statics, key=lambda n: summary[n])
        out.update(best_static=best, rebalance_over_best_static=round(summary["rebalance"] / summary[best], 3)
                   if summary[best] else None,
                   per_rep_ratio=[round(runs["rebalance"][i]["goodput_rps"] /
                                        max(runs[s][i]["goodput_rps"] for s in statics), 3)
                                  if max(runs[s][i]["goodput_rps"] for s in statics) else None
                                  for i in range(args.reps)])
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
