"""The planner's simulator against the real cluster on this machine (issue 16's validation).

    .venv/bin/python -m benchmarks.planner_validate          # compare with the last measured sweep
    .venv/bin/python -m benchmarks.planner_validate --run    # run benchmarks.disagg_vs_colocated first

The measured side is ``benchmarks/disagg_vs_colocated.py``'s sweep (both modes on the same two
cores: 1 prefill + 1 decode worker vs 2 colocated workers, llama-8m, one thread each, the
Azure conversation trace scaled, 80 rows per rate, its TTFT/TPOT objectives), read from its
results folder. The predicted side: a profile measured now through the engine
(``tandem profile``'s ``measure``, llama-8m, 1 thread), the same rows (the load generator's
own replay, so the same lengths and arrival pattern) rescaled to each rate, simulated for
both layouts, with the workers, the router and the load generator sharing the host's cores
(``--host-cores``, the simulator's shared-core model; 0: none). Prints per mode and rate the measured and predicted attainment, then per mode
the max rate meeting the objective (>= 90% attainment on the grid) and the max goodput,
measured vs predicted, with the relative error, and whether the two modes rank the same.
"""
from __future__ import annotations

import argparse
import os
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from cluster.planner.measure import measure
from cluster.planner.simulator import Layout, Workload, simulate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "disagg_vs_colocated"
LAYOUTS = {"disaggregated": Layout("disaggregated", 1, 1), "colocated": Layout("colocated", 0, 2, 2048)}


def trace_rows(rows: int) -> Workload:
    """The rows the load generator replays (benchmarks.disagg_vs_colocated's azure-conv)."""
    from benchmarks.disagg_vs_colocated import WORKLOADS
    from loadtest.replay import TraceTransform, TraceWorkload
    from loadtest.targets.base import TargetInfo
    from loadtest.traces import load_trace
    trace, input_scale, output_scale = WORKLOADS["azure-conv"]
    w = TraceWorkload(load_trace(trace, limit=rows), TraceTransform(
        rate=1.0, input_scale=input_scale, output_scale=output_scale, max_output=256), seed=0)
    plan = w.plan(TargetInfo("llama-8m", vocab_size=32000, max_model_len=2048))
    specs = [s.spec for s in plan.sessions]
    offsets = list(plan.start_offsets)
    return Workload(np.array(offsets, dtype=float), np.array([len(s.token_ids) for s in specs]),
                    np.array([max(1, s.max_tokens) for s in specs]), "azure-conv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="run benchmarks.disagg_vs_colocated first (9-12 min)")
    ap.add_argument("--reps", type=int, default=5, help="profile repetitions")
    ap.add_argument("--host-cores", type=float, default=float(os.cpu_count() or 1),
                    help="cores the workers, router and load generator share (0: model none)")
    args = ap.parse_args()
    if args.run:
        subprocess.run([sys.executable, "-m", "benchmarks.disagg_vs_colocated"], cwd=ROOT, check=True)
    measured = {m: json.loads((RESULTS / f"{m}.json").read_text()) for m in LAYOUTS}
    prof = measure("llama-8m", threads=1, reps=args.reps)
    w = trace_rows(80)
    out = {}
    for mode, data in measured.items():
        sweep = data["sweep"]
        slo = sweep["steps"][0]["goodput"]["slo"]
        ttft, tpot = slo["ttft_ms"], slo["tpot_ms"]
        pred_rows = []
        for step in sweep["steps"]:
            res = simulate(prof, LAYOUTS[mode], w.with_rate(step["rate"]), host_cores=args.host_cores or None)
            att = res.attainment(ttft, tpot)
            pred_rows.append((step["rate"], step["slo_attainment"], att))
            print(json.dumps({"bench": "planner_validate", "mode": mode, "rate": step["rate"],
                              "ttft_slo_ms": ttft, "tpot_slo_ms": tpot,
                              "measured_attainment": round(step["slo_attainment"], 3),
                              "predicted_attainment": round(att, 3),
                              "measured_tpot_p50_ms": round(step["tpot_p50_ms"] or 0, 2),
                              "predicted_tpot_p50_ms": round(res.summary()["tpot_p50_ms"], 2),
                              "measured_ttft_p50_ms": round(step["ttft_p50_ms"] or 0, 1),
                              "predicted_ttft_p50_ms": round(res.summary()["ttft_p50_ms"], 1)}), flush=True)
        meas_rate = max([r for r, m, _ in pred_rows if m >= 0.9], default=0.0)
        pred_rate = max([r for r, _, p in pred_rows if p >= 0.9], default=0.0)
        meas_good = max(r * m for r, m, _ in pred_rows)
        pred_good = max(r * p for r, _, p in pred_rows)
        out[mode] = (meas_good, pred_good)
        print(json.dumps({"bench": "planner_validate", "mode": mode, "summary": True,
                          "measured_max_rate_meeting_slo": meas_rate, "predicted_max_rate_meeting_slo": pred_rate,
                          "measured_max_goodput_rps": round(meas_good, 3), "predicted_max_goodput_rps": round(pred_good, 3),
                          "goodput_error": round(pred_good / meas_good - 1, 3) if meas_good else None}), flush=True)
    (md, pd), (mc, pc) = out["disaggregated"], out["colocated"]
    print(json.dumps({"bench": "planner_validate", "ranking_measured": "disaggregated" if md > mc else "colocated",
                      "ranking_predicted": "disaggregated" if pd > pc else "colocated",
                      "profile": {"prefill": [prof.prefill.base_ms, prof.prefill.ms_per_token, prof.prefill.ms_per_token2],
                                  "decode": [prof.decode.base_ms, prof.decode.ms_per_seq, prof.decode.ms_per_ctx_token],
                                  "overhead": [prof.overhead.ttft_ms, prof.overhead.step_factor,
                                               prof.overhead.cpu_ms_per_token]},
                      "host_cores": args.host_cores}),
          flush=True)


if __name__ == "__main__":
    main()
