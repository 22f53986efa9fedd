"""``tandem plan`` at fleet scale, and DistServe's direction on a GPU roofline.

    .venv/bin/python -m benchmarks.planner_scale                  # ~1-2 min
    .venv/bin/python -m benchmarks.planner_scale --requests 20000 --gpus 256

- scale: a 1,024-GPU fleet of Llama-70B-class workers on H100-class GPUs (a roofline profile,
  tensor parallel 8: 128 workers) and 100,000 requests of a trace (tiled where the trace is
  shorter), every colocated chunk budget and a spread of P:D splits judged at a rate that
  loads the fleet; the wall time of the whole search on this host;
- direction: on the Azure code trace (prompts ~2,000 tokens, outputs ~28: prefill-heavy) at a
  tight TPOT objective, the best disaggregated layout against the best colocated one; and the
  best disaggregated layout's prefill share on the code trace vs the conversation trace
  (outputs ~4x longer relative to prompts), which DistServe says must move with the ratio.
Prints one JSON line per figure.
"""
from __future__ import annotations

import argparse
import json
import time

from cluster.planner.plan import plan
from cluster.planner.profile import roofline
from cluster.planner.simulator import Workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--gpus", type=int, default=1024)
    ap.add_argument("--trace", default="mooncake-conv")
    ap.add_argument("--ttft-ms", type=float, default=2000.0)
    ap.add_argument("--tpot-ms", type=float, default=40.0)
    ap.add_argument("--splits", type=int, default=16)
    args = ap.parse_args()
    prof = roofline("llama-70b", "h100", 8)
    workers = args.gpus // prof.gpus_per_worker
    t0 = time.perf_counter()
    w = Workload.from_trace(args.trace, max_len=32768).tiled(args.requests)
    # A rate that loads the fleet: what its prefill could compute at ~60% busy.
    mean_prompt_ms = float(prof.prefill.ms(w.prompt).mean())
    rate = 0.6 * workers * 1000.0 / mean_prompt_ms
    ranked = plan(prof, w, workers, args.ttft_ms, args.tpot_ms, rate=rate, max_splits=args.splits)
    wall = time.perf_counter() - t0
    best = ranked[0]
    print(json.dumps({"bench": "planner_scale", "gpus": args.gpus, "workers": workers, "requests": len(w),
                      "trace": args.trace, "rate_rps": round(rate, 1), "layouts": len(ranked),
                      "wall_s": round(wall, 2), "best": best.layout.describe(),
                      "best_attainment": best.attainment, **best.figures}), flush=True)

    for trace, tpot in (("azure-code", 25.0), ("azure-code", 60.0), ("azure-conv", 25.0)):
        w = Workload.from_trace(trace, max_len=16384).tiled(5000)
        ranked = plan(prof, w, 16, ttft_ms=2000, tpot_ms=tpot)
        dis = next(c for c in ranked if c.layout.mode == "disaggregated")
        col = next(c for c in ranked if c.layout.mode == "colocated")
        print(json.dumps({"bench": "planner_direction", "trace": trace, "workers": 16, "tpot_ms": tpot,
                          "mean_prompt": round(float(w.prompt.mean())), "mean_output": round(float(w.output.mean())),
                          "best_disaggregated": dis.layout.describe(), "goodput_disaggregated_rps": round(dis.goodput_rps, 2),
                          "best_colocated": col.layout.describe(), "goodput_colocated_rps": round(col.goodput_rps, 2),
                          "disaggregated_over_colocated": round(dis.goodput_rps / col.goodput_rps, 2),
                          "prefill_share": round(dis.layout.prefill_workers / 16, 3)}), flush=True)


if __name__ == "__main__":
    main()
