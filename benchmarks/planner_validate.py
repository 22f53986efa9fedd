"""The planner's simulator against the real cluster on this machine (issue 16's validation).

    .venv/bin/python -m benchmarks.planner_validate                       # all three workloads
    .venv/bin/python -m benchmarks.planner_validate --workload summarize  # one
    .venv/bin/python -m benchmarks.planner_validate --run                 # measure them first

The measured side is ``benchmarks/disagg_vs_colocated.py``'s sweeps, read from its results
folder (``--results``; by default ``three_workloads/<workload>/``): every configuration there
(disaggregated 1 prefill + 1 decode worker; colocated 2 workers, a 2,048-token step budget or
``colocated-bN``'s N) on the same two cores, llama-8m, one thread each, at the run's
TTFT/TPOT objectives. The predicted side: a profile measured now through the engine
(``tandem profile``'s ``measure``, llama-8m, 1 thread), the same requests (the load
generator's own plan of the workload, so the same lengths and arrival pattern) rescaled to
each rate, simulated for each layout, with the workers, the router and the load generator
sharing the host's cores (``--host-cores``, the simulator's shared-core model; 0: none).
Prints per configuration and rate the measured and predicted attainment and latency; per
configuration the max rate meeting the objectives (>= 90% attainment on the grid) and the
max goodput (rate x attainment), measured vs predicted, with the relative error; and per
workload whether the simulator ranks the configurations in the measured order.
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
RESULTS = ROOT / "benchmarks" / "results" / "disagg_vs_colocated" / "three_workloads"
THREE = ("azure-code", "azure-conv", "summarize")


def workload_rows(name: str, rows: int) -> Workload:
    """The requests the load generator sends for ``name`` (one of
    benchmarks.disagg_vs_colocated's workloads): its own plan, so the same lengths, context
    clipping and arrival pattern; ``rows`` of them, arrivals at 1 req/s (rescaled per rate)."""
    import argparse
    import itertools
    from benchmarks.disagg_vs_colocated import MODEL, workload_args
    from loadtest.options import add_run_options, build_workload
    from loadtest.targets.base import TargetInfo
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    argv = [*workload_args(name, rows), "--rate", "1", "--seed", "0", "--target", "tandem://x:1"]
    plan = build_workload(parser.parse_args(argv)).plan(
        TargetInfo(MODEL, vocab_size=32000, max_model_len=2048))
    specs = [s.spec for s in itertools.islice(plan.sessions, rows)]
    offsets = list(itertools.islice(plan.start_offsets, len(specs)))
    return Workload(np.array(offsets, dtype=float), np.array([len(s.token_ids) for s in specs]),
                    np.array([max(1, s.max_tokens) for s in specs]), name)


def layout_of(config: str) -> Layout:
    """The simulator's layout of a disagg_vs_colocated configuration name."""
    from benchmarks.disagg_vs_colocated import step_budget
    budget = step_budget(config)
    return Layout("disaggregated", 1, 1) if budget is None else Layout("colocated", 0, 2, budget)


def validate(workload: str, folder: Path, prof, host_cores: float) -> dict[str, tuple[float, float]]:
    """Per configuration measured in ``folder``: (measured, predicted) max goodput."""
    from benchmarks.disagg_vs_colocated import measured_configs
    measured = measured_configs(folder)
    if not measured:
        raise SystemExit(f"no measured sweep in {folder}: run benchmarks.disagg_vs_colocated "
                         f"--workload {workload} --out {folder} (or --run)")
    rows = max(s["requests"] for r in measured.values() for s in r["sweep"]["steps"])
    w = workload_rows(workload, max(rows, 1))
    out = {}
    for config, result in measured.items():
        sweep = result["sweep"]
        slo = sweep["steps"][0]["goodput"]["slo"]
        ttft, tpot = slo["ttft_ms"], slo["tpot_ms"]
        pred_rows = []
        for step in sweep["steps"]:
            at = w.with_rate(step["rate"])
            n = max(1, min(len(at), step["requests"]))   # what the load generator sent
            at = Workload(at.arrival_s[:n], at.prompt[:n], at.output[:n], workload)
            res = simulate(prof, layout_of(config), at, host_cores=host_cores or None)
            att = res.attainment(ttft, tpot)
            pred_rows.append((step["rate"], step["slo_attainment"], att))
            print(json.dumps({"bench": "planner_validate", "workload": workload, "config": config,
                              "rate": step["rate"], "ttft_slo_ms": ttft, "tpot_slo_ms": tpot,
                              "measured_attainment": round(step["slo_attainment"], 3),
                              "predicted_attainment": round(att, 3),
                              "measured_tpot_p50_ms": round(step["tpot_p50_ms"] or 0, 2),
                              "predicted_tpot_p50_ms": round(res.summary()["tpot_p50_ms"], 2),
                              "measured_ttft_p50_ms": round(step["ttft_p50_ms"] or 0, 1),
                              "predicted_ttft_p50_ms": round(res.summary()["ttft_p50_ms"], 1)}),
                  flush=True)
        meas_rate = max([r for r, m, _ in pred_rows if m >= 0.9], default=0.0)
        pred_rate = max([r for r, _, p in pred_rows if p >= 0.9], default=0.0)
        meas_good = max(r * m for r, m, _ in pred_rows)
        pred_good = max(r * p for r, _, p in pred_rows)
        out[config] = (meas_good, pred_good)
        print(json.dumps({"bench": "planner_validate", "workload": workload, "config": config,
                          "summary": True, "ttft_slo_ms": ttft, "tpot_slo_ms": tpot,
                          "measured_max_rate_meeting_slo": meas_rate,
                          "predicted_max_rate_meeting_slo": pred_rate,
                          "measured_max_goodput_rps": round(meas_good, 3),
                          "predicted_max_goodput_rps": round(pred_good, 3),
                          "goodput_error": round(pred_good / meas_good - 1, 3) if meas_good else None}),
              flush=True)
    measured_order = sorted(out, key=lambda c: -out[c][0])
    predicted_order = sorted(out, key=lambda c: -out[c][1])
    print(json.dumps({"bench": "planner_validate", "workload": workload, "ranking": True,
                      "measured": measured_order, "predicted": predicted_order,
                      "same_order": measured_order == predicted_order}), flush=True)
    return out


def main() -> None:
    from benchmarks.disagg_vs_colocated import WORKLOADS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=[*THREE, *sorted(set(WORKLOADS) - set(THREE)), "all"],
                    default="all", help="all: the three of the disaggregation comparison")
    ap.add_argument("--results", type=Path, help="the measured sweeps (default: three_workloads/<workload>)")
    ap.add_argument("--run", action="store_true", help="run benchmarks.disagg_vs_colocated first")
    ap.add_argument("--reps", type=int, default=5, help="profile repetitions")
    ap.add_argument("--host-cores", type=float, default=float(os.cpu_count() or 1),
                    help="cores the workers, router and load generator share (0: model none)")
    args = ap.parse_args()
    workloads = list(THREE) if args.workload == "all" else [args.workload]
    if args.results and len(workloads) > 1:
        ap.error("--results names one workload's folder: give --workload too")
    folders = {w: args.results or RESULTS / w for w in workloads}
    if args.run:
        from benchmarks.disagg_vs_colocated import THREE_WORKLOADS
        for w in workloads:
            subprocess.run([sys.executable, "-m", "benchmarks.disagg_vs_colocated", "--workload", w,
                            *THREE_WORKLOADS.get(w, []), "--tpot-ms", "6", "--out", str(folders[w])],
                           cwd=ROOT, check=True)
    prof = measure("llama-8m", threads=1, reps=args.reps)
    print(json.dumps({"bench": "planner_validate", "host_cores": args.host_cores,
                      "profile": {"prefill": [prof.prefill.base_ms, prof.prefill.ms_per_token,
                                              prof.prefill.ms_per_token2],
                                  "decode": [prof.decode.base_ms, prof.decode.ms_per_seq,
                                             prof.decode.ms_per_ctx_token],
                                  "handoff": [prof.handoff.base_ms, prof.handoff.gb_per_s],
                                  "overhead": [prof.overhead.ttft_ms, prof.overhead.step_factor,
                                               prof.overhead.cpu_ms_per_token]}}), flush=True)
    for w in workloads:
        validate(w, folders[w], prof, args.host_cores)


if __name__ == "__main__":
    main()
