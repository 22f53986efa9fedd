"""The first inter-token gap at low load, disaggregated vs colocated, and where it goes.

    .venv/bin/python -m benchmarks.first_gap                 # ~2 min
    .venv/bin/python -m benchmarks.first_gap --prompt 1000 --reps 3

One request at a time (no queueing), streamed through the SDK against a fresh cluster per
mode (``llama-8m``, one thread per worker, the layouts of ``benchmarks.disagg_vs_colocated``),
modes interleaved round by round. For each request: TTFT, the gap between the first and the
second token (disaggregated: the KV hand-off, its import and one decode step; colocated: one
decode step), and the mean later gap. In disaggregated mode the prefill worker's own
timings say how long exporting and shipping took. Prints one JSON line per mode and round,
then the medians and the disaggregated / colocated ratio of the first gap.
"""
from __future__ import annotations

import argparse
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
    cfg = load_config(None, COMMON + MODES[mode] + ["router.health_poll_s=0.2"])
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
    args = p.parse_args()
    rng = random.Random(0)
    got: dict[str, list[dict]] = {"disaggregated": [], "colocated": []}
    for _ in range(args.reps):
        for mode in got:
            row = run_round(mode, args, rng)
            got[mode].append(row)
            print(json.dumps(row), flush=True)
    summary = {m: statistics.median(r["first_gap_ms_p50"] for r in rows) for m, rows in got.items()}
    print(json.dumps({"bench": "first_gap", "summary": True, "prompt": args.prompt,
                      "first_gap_ms_p50": summary,
                      "disagg_over_colocated": round(summary["disaggregated"] / summary["colocated"], 2)}))


if __name__ == "__main__":
    main()
