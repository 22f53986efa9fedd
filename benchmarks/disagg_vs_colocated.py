"""Disaggregated vs colocated serving on the same two cores: goodput at SLO, and why.

    .venv/bin/python -m benchmarks.disagg_vs_colocated            # azure-conv, 3 configurations
    .venv/bin/python -m benchmarks.disagg_vs_colocated --workload summarize \
        --rates 0.5,1,1.5,2,2.5,3 --requests 50 --duration 40 --tpot-ms 6 \
        --out benchmarks/results/disagg_vs_colocated/three_workloads/summarize
    .venv/bin/python -m benchmarks.disagg_vs_colocated --reanalyse  # figures again, no runs

Every configuration gets the same two single-thread workers of the ``llama-8m`` random-weight
model (a 1,000-token prefill takes ~140 ms on one thread): *disaggregated* = 1 prefill + 1
decode worker; *colocated* = 2 workers that do both phases (chunked prefill in the same
continuous batch as the decodes) with a 2,048-token step budget (a prompt is one step), and
*colocated-bN* the same with an N-token budget (Sarathi-Serve's knob; ``--modes`` picks the
configurations, the comparison takes the best colocated one per figure and objective), and
*disaggregated-overflow* the disaggregated pair with prefill overflow on (the router's
default since these runs; ``slo.tpot_ms`` set to ``--tpot-ms``), compared with both. The
router runs in this process (its CPU is counted); the load generator (``python -m loadtest
run``) runs in a child process per rate, so it does not share the router's GIL. Workloads
(``WORKLOADS``): the Azure 2023 conversation and code traces replayed with their own arrival
patterns, lengths scaled, time rescaled to each offered rate, and a 1,500-in / 100-out
summarization shape with Poisson arrivals; fresh prompt tokens per step; every rate runs in
every configuration. The prefix store and SLO admission are off (the traces have no prefix
reuse here; admission would refuse instead of serving late).

Inside every worker a probe (installed with Ray's ``__ray_call__``, no worker code changed)
times each engine step and notes what it held (prompt tokens, decoding sequences), how long
each prompt waited for its first step and each request's engine TTFT. With per-process CPU
from /proc this gives the where-the-time-goes breakdown per rate. Every step is also judged
again at other TPOT objectives. Output: one JSON line per figure on stdout; results (per-mode
and comparison JSON, PNG plots) in ``benchmarks/results/disagg_vs_colocated/`` (a subfolder
per other workload); the load generator's per-rate reports in ``bench-results/``.
Findings: docs/disaggregation.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

for _k, _v in {"LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1", "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)

from cluster.config import load_config                       # noqa: E402
from cluster.testing import BackgroundCluster                # noqa: E402
from loadtest.metrics import SLO, summarize                  # noqa: E402
from loadtest.record import RequestRecord, Status            # noqa: E402
from loadtest.sweep import StepResult, SweepPolicy, judge, outcome, run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "disagg_vs_colocated"
SCRATCH = ROOT / "bench-results" / "disagg_vs_colocated"
MODEL = "llama-8m"
# The workloads (loadtest arguments). ``azure-conv``: the Azure 2023 conversation trace with
# prompts and outputs halved (median 193 / 68 tokens over the 80 rows used); its control
# ``azure-conv-short-output``: the same prompts and arrivals, outputs at a tenth (median 13).
# ``azure-code``: the Azure 2023 code trace, prompts halved (median ~730 tokens, a few
# clipped at the 2,048-token context), outputs as traced (median 13): long prompts, short
# answers. ``summarize``: 1,500 tokens in, 100 out, Poisson arrivals.
_TRACE = ["--workload", "trace", "--max-output", "256"]
WORKLOADS = {
    "azure-conv": [*_TRACE, "--trace", "azure-conv", "--input-scale", "0.5", "--output-scale", "0.5"],
    "azure-conv-short-output": [*_TRACE, "--trace", "azure-conv", "--input-scale", "0.5",
                                "--output-scale", "0.1"],
    "azure-code": [*_TRACE, "--trace", "azure-code", "--input-scale", "0.5", "--output-scale", "1"],
    "summarize": ["--workload", "synthetic", "--input-len", "1500", "--output-len", "100",
                  "--arrival", "poisson"],
}


def workload_args(name: str, rows: int | None = None) -> list[str]:
    """The load generator's arguments for workload ``name`` (a trace: its first ``rows`` rows)."""
    args = list(WORKLOADS[name])
    if rows is not None and "trace" in args:
        args += ["--trace-rows", str(rows)]
    return args


def measured_configs(folder: Path) -> dict[str, dict[str, Any]]:
    """The per-configuration results a run wrote into ``folder`` (``disaggregated.json``,
    ``disaggregated-overflow.json``, ``colocated*.json``), by configuration name."""
    return {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))
            if f.stem.startswith(("disaggregated", "colocated"))}


COMMON = [f"model.model={MODEL}", "model.num_threads=1", "model.device=cpu", "router.grpc_port=0",
          "store.enabled=false", "router.admission.enabled=false", "router.auth.enabled=false"]
# Disaggregated without prefill overflow (router.prefill_overflow, on by default since these
# runs): every prompt on the prefill worker, the layout the committed results measured.
MODES = {
    "disaggregated": ["mode=disaggregated", "pools.prefill.workers=1", "pools.decode.workers=1",
                      "pools.prefill.cpus_per_worker=1", "pools.decode.cpus_per_worker=1",
                      "router.prefill_overflow=false"],
    "colocated": ["mode=colocated", "pools.decode.workers=2", "pools.decode.cpus_per_worker=1"],
    # The default since: prompts overflow to the decode worker while the prefill worker is
    # busy, bounded by slo.tpot_ms (set to the run's --tpot-ms; docs/disaggregation.md).
    "disaggregated-overflow": ["mode=disaggregated", "pools.prefill.workers=1", "pools.decode.workers=1",
                               "pools.prefill.cpus_per_worker=1", "pools.decode.cpus_per_worker=1",
                               "router.prefill_overflow=true"],
}


# The three workloads' runs as committed (docs/disaggregation.md): rates, requests a rate,
# sending seconds, the breakdown's rate; all at --tpot-ms 6 (re-judged at TPOT_GRID).
THREE_WORKLOADS = {
    "summarize": ["--rates", "0.5,1,1.5,2,2.5,3", "--requests", "50", "--duration", "40",
                  "--breakdown-rate", "2"],
    "azure-code": ["--rates", "0.25,0.5,1,1.5", "--requests", "40", "--duration", "60",
                   "--breakdown-rate", "0.5"],
    "azure-conv": ["--rates", "1,2,3,4,6", "--requests", "60", "--duration", "30",
                   "--breakdown-rate", "2"],
}


def step_budget(name: str) -> int | None:
    """A colocated configuration's chunked-prefill budget (tokens a step): ``colocated``
    2,048 (the engine default: a prompt is one step), ``colocated-bN`` N; None for
    ``disaggregated``; SystemExit for anything else."""
    if name.startswith("disaggregated") and name in MODES:
        return None
    if name == "colocated":
        return 2048
    if name.startswith("colocated-b") and name[len("colocated-b"):].isdigit():
        return int(name[len("colocated-b"):])
    raise SystemExit(f"unknown configuration {name!r}: one of {sorted(MODES)} or colocated-bN")


def config_overrides(name: str, tpot_ms: float) -> list[str]:
    """A configuration's overrides: a mode of ``MODES``, or ``colocated-bN``, the colocated
    workers with a chunked-prefill budget of N tokens a step (Sarathi-Serve's knob). The TPOT
    objective goes to ``slo.tpot_ms`` (prefill overflow's stall bound reads it)."""
    budget = step_budget(name)
    if name in MODES:
        return COMMON + MODES[name] + [f"slo.tpot_ms={tpot_ms:g}"]
    return COMMON + MODES["colocated"] + [f"model.max_num_batched_tokens={budget}", f"slo.tpot_ms={tpot_ms:g}"]


CLK_TCK = os.sysconf("SC_CLK_TCK")
TPOT_GRID = [4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0, 50.0]   # objectives the steps are re-judged at


# -- the probe, run inside each pool actor ----------------------------------------------------
def _install_probe(worker: Any) -> int:
    """Wrap the worker engine's schedule/step to log (step s, prompt tokens, prompt seqs,
    decoding seqs) per step, each prompt's wait from arrival to its first step, and each
    request's engine TTFT (arrival in this engine to its first token)."""
    import time as _time
    engine = worker.engine
    if "_bench_probe" not in engine.__dict__:
        steps: list[tuple] = []
        waits: list[float] = []
        ttfts: dict[str, float] = {}
        seen: set[str] = set()
        held = [(0, 0, 0)]
        schedule, step = engine.scheduler.schedule, engine.step

        def timed_schedule():
            batch = schedule()
            now, pt, ps, ds = _time.monotonic(), 0, 0, 0
            for seq, n in zip(batch.seqs, batch.num_new):
                if seq.num_computed < seq.prompt_len:
                    pt, ps = pt + n, ps + 1
                    if seq.request_id not in seen:
                        seen.add(seq.request_id)
                        waits.append(now - seq.arrival_time)
                else:
                    ds += 1
            held[0] = (pt, ps, ds)
            return batch

        def timed_step():
            held[0] = (0, 0, 0)
            t0 = _time.perf_counter()
            out = step()
            steps.append((_time.perf_counter() - t0, *held[0]))
            for o in out:
                if o.ttft_s is not None and len(o.token_ids) == 1:
                    ttfts[o.request_id] = o.ttft_s
            return out

        engine.scheduler.schedule, engine.step = timed_schedule, timed_step
        engine.__dict__["_bench_probe"] = (steps, waits, ttfts)
    return os.getpid()


def _probe_snapshot(worker: Any) -> dict[str, Any]:
    """Take (and clear) the probe's logs, with the process's CPU and the driver's busy time."""
    import time as _time
    steps, waits, ttfts = worker.engine.__dict__["_bench_probe"]
    got_steps, got_waits = steps[:], waits[:]
    del steps[:len(got_steps)], waits[:len(got_waits)]
    got_ttfts = {rid: ttfts.pop(rid) for rid in list(ttfts)}
    return {"t": _time.monotonic(), "cpu_s": _time.process_time(), "busy_s": worker.driver.busy_s,
            "steps": got_steps, "waits": got_waits, "ttfts": got_ttfts}


# -- accounting ---------------------------------------------------------------------------------
def _machine_busy_s() -> float:
    """CPU-seconds all cores spent not idle (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def _own_cpu_s() -> tuple[float, float]:
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def _dist(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "mean": None}
    q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
    return {"n": len(values), "p50": statistics.median(values), "p90": q[8],
            "mean": statistics.fmean(values)}


def _per_token(steps: list[tuple]) -> float | None:
    tokens = sum(s[3] for s in steps)
    return 1000 * sum(s[0] * s[3] for s in steps) / tokens if tokens else None


def worker_breakdown(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One worker's time over a step: busy fraction split by what its engine steps held."""
    wall = after["t"] - before["t"]
    steps = after["steps"]
    kinds = {"decode_only": [s for s in steps if s[2] == 0 and s[3] > 0],
             "prefill_only": [s for s in steps if s[2] > 0 and s[3] == 0],
             "mixed": [s for s in steps if s[2] > 0 and s[3] > 0]}
    decode_tokens = sum(s[3] for s in steps)
    return {
        "wall_s": wall, "busy_fraction": (after["busy_s"] - before["busy_s"]) / wall,
        "cpu_fraction": (after["cpu_s"] - before["cpu_s"]) / wall,
        "steps": len(steps), "prompt_tokens": sum(s[1] for s in steps),
        "decode_tokens": decode_tokens,
        **{f"{k}_fraction": sum(s[0] for s in v) / wall for k, v in kinds.items()},
        **{f"{k}_step_ms": _dist([1000 * s[0] for s in v]) for k, v in kinds.items()},
        # The engine's share of TPOT: the mean duration of the steps each decode token was
        # made in (token-weighted), over all steps and over decode-only steps; the
        # difference is what prompt work in the same steps added (interference).
        "step_ms_per_decode_token": _per_token(steps),
        "step_ms_per_decode_token_decode_only_steps": _per_token(kinds["decode_only"]),
        "decode_tokens_in_prompt_steps": (sum(s[3] for s in kinds["mixed"]) / decode_tokens
                                          if decode_tokens else None),
        "prompt_wait_ms": _dist([1000 * w for w in after["waits"]]),
    }


def latency_parts(records: list[RequestRecord], engine_ttft: dict[str, float]) -> dict[str, Any]:
    """Medians of where a request's first token and later tokens spend time: in the engine
    (queue + prefill steps), in the worker and Ray around it (server TTFT - engine TTFT), on
    the way out (client TTFT - server TTFT); the first gap after the first token (in the
    disaggregated mode, KV hand-off + import + one decode step); and the mean later gap."""
    ok = [r for r in records if r.ok and r.ttft_ms is not None]
    engine = [(r, 1000 * engine_ttft[r.request_id]) for r in ok if r.request_id in engine_ttft]
    return {
        "requests_matched": len(engine),
        "engine_ttft_ms": _dist([e for _, e in engine]),
        "worker_and_ray_ms": _dist([r.server_ttft_ms - e for r, e in engine if r.server_ttft_ms]),
        "router_to_client_ms": _dist([r.ttft_ms - r.server_ttft_ms for r in ok if r.server_ttft_ms]),
        "first_gap_ms": _dist([r.itl_ms[0] for r in ok if r.itl_ms]),
        "later_gap_mean_ms": _dist([statistics.fmean(r.itl_ms[1:]) for r in ok if len(r.itl_ms) > 1]),
    }


# -- one rate ----------------------------------------------------------------------------------
class Step:
    """Runs the load generator at one rate against a running cluster, with the probes."""

    def __init__(self, bg: BackgroundCluster, mode: str, args: argparse.Namespace):
        import ray
        self.bg, self.mode, self.args = bg, mode, args
        self.handles = {n: h for pool in bg.cluster.pools.values() for n, h in pool.handles.items()}
        self.pids = dict(zip(self.handles, ray.get(
            [h.__ray_call__.remote(_install_probe) for h in self.handles.values()], timeout=60)))
        self.breakdowns: dict[float, dict[str, Any]] = {}
        self.records: dict[float, list[RequestRecord]] = {}
        self.seed = 1

    def snapshot(self) -> dict[str, Any]:
        import ray
        snaps = ray.get([h.__ray_call__.remote(_probe_snapshot) for h in self.handles.values()],
                        timeout=60)
        return {"workers": dict(zip(self.handles, snaps)), "machine_s": _machine_busy_s(),
                "own": _own_cpu_s(), "t": time.monotonic()}

    def loadgen(self, rate: float, out: Path, requests: int) -> subprocess.CompletedProcess:
        a = self.args
        self.seed += 1   # fresh prompt tokens: no step may hit the cache an earlier one warmed
        cmd = [sys.executable, "-m", "loadtest", "run", "--target", f"tandem://{self.bg.target}",
               *workload_args(a.workload, requests), "--rate", f"{rate:g}",
               "--seed", str(self.seed), "--max-requests", str(requests),
               "--duration", str(a.duration), "--drain-timeout", "20", "--request-timeout", "30",
               "--slo-ttft-ms", f"{a.ttft_ms:g}", "--slo-tpot-ms", f"{a.tpot_ms:g}",
               "--out", str(out), "--quiet", "--no-plots"]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)

    async def run_at(self, rate: float) -> StepResult:
        out = self.args.scratch / self.mode / f"rate_{rate:g}"
        before = self.snapshot()
        proc = self.loadgen(rate, out, self.args.requests)
        after = self.snapshot()
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen at {rate} req/s failed ({proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads((out / "result.json").read_text())
        self.records[rate] = _load_records(out / "requests.jsonl")
        self.breakdowns[rate] = self._breakdown(before, after, self.records[rate])
        return judge(rate, result["figures"], self.args.policy, path=str(out / "result.json"))

    def _breakdown(self, before: dict[str, Any], after: dict[str, Any],
                   records: list[RequestRecord]) -> dict[str, Any]:
        wall = after["t"] - before["t"]
        workers = {n: worker_breakdown(before["workers"][n], after["workers"][n]) for n in self.handles}
        cores = {"workers": sum(w["cpu_fraction"] for w in workers.values()),
                 "router_process": (after["own"][0] - before["own"][0]) / wall,
                 "load_generator": (after["own"][1] - before["own"][1]) / wall,
                 "machine": (after["machine_s"] - before["machine_s"]) / wall}
        cores["other_processes"] = cores["machine"] - cores["workers"] - cores["router_process"] \
            - cores["load_generator"]
        engine_ttft = {rid: t for w in after["workers"].values() for rid, t in w["ttfts"].items()}
        return {"wall_s": wall, "cores_busy": cores, "workers": workers,
                "latency_parts_ms": latency_parts(records, engine_ttft)}

    def warm_up(self) -> None:
        self.loadgen(2.0, self.args.scratch / self.mode / "warmup", 8)
        self.snapshot()   # drop the warm-up's step logs


def _load_records(path: Path) -> list[RequestRecord]:
    records = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        row.pop("tpot_ms", None)
        row["status"] = Status(row["status"])
        records.append(RequestRecord(**row))
    return records


def engine_costs() -> dict[str, Any]:
    """The model's step costs on one thread, in this process: prefill time by prompt length
    and decode step time by batch size (contexts of ~500 tokens). Medians of 3 / 40."""
    from engine import LLM, SamplingParams
    engine = LLM(MODEL, num_threads=1).engine
    prefill = {}
    for n in (250, 500, 1000):
        engine.prompt_logits(list(range(3, 3 + n)))
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            engine.prompt_logits(list(range(3, 3 + n)))
            runs.append(1000 * (time.perf_counter() - t0))
        prefill[n] = statistics.median(runs)
    decode = {}
    for batch in (1, 4, 8, 16, 32):
        for i in range(batch):
            engine.add_request(f"b{batch}-{i}", list(range(3 + i, 503 + i)),
                               SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True))
        times = []
        while engine.has_unfinished():
            t0 = time.perf_counter()
            engine.step()
            times.append(1000 * (time.perf_counter() - t0))
        decode[batch] = statistics.median(times[-41:-1])
    return {"prefill_ms_by_prompt_tokens": prefill, "decode_step_ms_by_batch": decode}


# -- one configuration ---------------------------------------------------------------------------
def measure(mode: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[float, list]]:
    """Start ``mode``'s cluster, sweep the rates, stop it; (per-config result, records by rate)."""
    import asyncio
    overrides = config_overrides(mode, args.tpot_ms)
    load_before = os.getloadavg()
    t0 = time.monotonic()
    bg = BackgroundCluster(load_config(None, overrides)).start()
    try:
        started_s = time.monotonic() - t0
        step = Step(bg, mode, args)
        step.warm_up()
        summary = asyncio.run(run_sweep(args.policy, step.run_at))
    finally:
        bg.stop()
    for row in summary["steps"]:
        figures = json.loads(Path(row["result"]).read_text())["figures"]
        row.update(duration_s=figures["throughput"]["duration_s"], latency_ms=figures["latency_ms"],
                   goodput=figures["goodput"],
                   breakdown=step.breakdowns[row["rate"]])
    result = {"mode": mode, "overrides": overrides, "worker_pids": step.pids,
              "startup_s": started_s, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "sweep": summary}
    return result, step.records


# -- comparison --------------------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def comparison_rates(results: dict[str, dict[str, Any]], loaded: float) -> dict[str, float]:
    """Rates both configurations ran at: ``common``, the highest at which the colocated
    baseline met the SLOs (else the lowest), and ``loaded``, the one nearest ``loaded``
    (a load where both are busy but keep up: where the time breakdown is most telling)."""
    steps = {m: {s["rate"]: s for s in r["sweep"]["steps"]} for m, r in results.items()}
    both = sorted(set.intersection(*(set(s) for s in steps.values())))
    passing = [r for r in both if steps["colocated"][r]["passed"]]
    return {"common": passing[-1] if passing else both[0],
            "loaded": min(both, key=lambda r: abs(r - loaded))}


def _where_time_goes(mode: str, rate: float, b: dict[str, Any]) -> dict[str, Any]:
    keys = ("busy_fraction", "cpu_fraction", "decode_only_fraction", "mixed_fraction",
            "prefill_only_fraction", "step_ms_per_decode_token",
            "step_ms_per_decode_token_decode_only_steps", "decode_tokens_in_prompt_steps")
    return {"bench": "disagg_vs_colocated", "figure": "where_time_goes", "mode": mode, "rate": rate,
            "cores_busy": b["cores_busy"],
            "engine_ms_per_decode_token": {k: _mode_per_token(b, k) for k in keys[5:7]},
            "latency_parts_p50_ms": {k: v["p50"] if isinstance(v, dict) else v
                                     for k, v in b["latency_parts_ms"].items()},
            "workers": {n: {k: w[k] for k in keys}
                        | {"decode_only_step_p50_ms": w["decode_only_step_ms"]["p50"],
                           "mixed_step_p50_ms": w["mixed_step_ms"]["p50"],
                           "prompt_wait_p50_ms": w["prompt_wait_ms"]["p50"]}
                        for n, w in b["workers"].items()}}


def compare(results: dict[str, dict[str, Any]], slo: SLO,
            loaded: float) -> tuple[dict[str, Any], list[dict]]:
    """The comparison document and its JSON lines (disaggregated over colocated ratios)."""
    d, c = results["disaggregated"]["sweep"], results["colocated"]["sweep"]
    lines = []

    def line(figure: str, dv: Any, cv: Any, **extra: Any) -> None:
        lines.append({"bench": "disagg_vs_colocated", "figure": figure, "disaggregated": dv,
                      "colocated": cv, "ratio": _ratio(dv, cv), **extra})

    objectives = {"slo_ttft_ms": slo.ttft_ms, "slo_tpot_ms": slo.tpot_ms,
                  "attainment_target": d["policy"]["attainment_target"]}
    for key in ("max_rate_meeting_slo", "goodput_at_max_rate", "max_goodput_rps"):
        line(key, d[key], c[key], **objectives)
    rates = comparison_rates(results, loaded)
    for rate in sorted(set(rates.values())):
        at = {m: next(s for s in r["sweep"]["steps"] if s["rate"] == rate) for m, r in results.items()}
        for metric in ("ttft", "tpot", "itl"):
            for p in ("p50", "p90", "p99"):
                line(f"{metric}_{p}_ms", at["disaggregated"]["latency_ms"][metric][p],
                     at["colocated"]["latency_ms"][metric][p], rate=rate)
        line("slo_attainment", at["disaggregated"]["slo_attainment"],
             at["colocated"]["slo_attainment"], rate=rate)
        lines += [_where_time_goes(m, rate, s["breakdown"]) for m, s in at.items()]
    return {"objectives": objectives, "rates": rates, "figures": lines}, lines


def by_objective(results: dict[str, dict[str, Any]], records: dict[str, dict[float, list]],
                 policy: SweepPolicy, ttft_ms: float, tpots: list[float]) -> list[dict[str, Any]]:
    """Every recorded step judged again at other TPOT objectives (the same requests). With
    several colocated budgets, ``colocated`` is the best of them at each objective (an operator
    tunes the budget to the objective), per figure, and ``colocated_config`` names it."""
    rows = []
    for tpot in tpots:
        slo, row = SLO(ttft_ms, tpot), {"slo_tpot_ms": tpot}
        for mode, r in results.items():
            judged = [judge(s["rate"], summarize(records[mode][s["rate"]], s["duration_s"], slo,
                                                 s["rate"]), policy) for s in r["sweep"]["steps"]]
            o = outcome(policy, judged, "rejudged")
            row[mode] = {k: o[k] for k in ("max_rate_meeting_slo", "goodput_at_max_rate",
                                           "max_goodput_rps")}
        each = {m: v for m, v in row.items() if m.startswith("colocated")}
        by_rate = max(each, key=lambda m: (each[m]["max_rate_meeting_slo"] or 0.0,
                                           each[m]["goodput_at_max_rate"] or 0.0))
        by_goodput = max(each, key=lambda m: each[m]["max_goodput_rps"] or 0.0)
        # the goodput at the max rate is the same configuration's as that rate
        row["colocated_config"] = {"max_rate_meeting_slo": by_rate, "goodput_at_max_rate": by_rate,
                                   "max_goodput_rps": by_goodput}
        row["colocated"] = {k: each[m][k] for k, m in row["colocated_config"].items()}
        rows.append(row)
    return rows


def best_colocated(results: dict[str, dict[str, Any]]) -> str:
    """The colocated configuration (of ``colocated`` and ``colocated-bN``) with the highest
    max goodput, ties broken by the highest rate meeting the SLOs."""
    names = [m for m in results if m.startswith("colocated")]
    if not names:
        raise SystemExit("no colocated configuration measured")
    return max(names, key=lambda m: (results[m]["sweep"]["max_goodput_rps"] or 0.0,
                                     results[m]["sweep"]["max_rate_meeting_slo"] or 0.0))


# -- plots -------------------------------------------------------------------------------------
def plots(results: dict[str, dict[str, Any]], records: dict[str, dict[float, list]], slo: SLO,
          rates: dict[str, float], objectives: list[dict[str, Any]], out: Path) -> list[str]:
    """goodput and SLO attainment vs rate, latency CDFs, the time breakdown, and the best
    passing rate at each TPOT objective (PNGs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from loadtest.plots import plot_latency_cdfs
    paths = []
    for key, ylabel, name in (("goodput_rps", "goodput (req/s)", "goodput_vs_rate.png"),
                              ("slo_attainment", "SLO attainment", "slo_attainment_vs_rate.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for mode, r in results.items():
            steps = r["sweep"]["steps"]
            line, = ax.plot([s["rate"] for s in steps], [s[key] for s in steps], marker="o", label=mode)
            if key == "slo_attainment":
                ax.plot([s["rate"] for s in steps], [s["goodput"]["tpot_attainment"] for s in steps],
                        ":", color=line.get_color(), label=f"{mode}: TPOT attainment alone")
        top = max(s["rate"] for r in results.values() for s in r["sweep"]["steps"])
        if key == "goodput_rps":
            ax.plot([0, top], [0, top], color="grey", linestyle=":", label="offered")
        else:
            ax.axhline(0.9, color="red", linestyle="--", linewidth=1, label="target 0.9")
        ax.set(xlabel="offered rate (req/s)", ylabel=ylabel,
               title=f"{ylabel}: TTFT<={slo.ttft_ms:g} ms, TPOT<={slo.tpot_ms:g} ms")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(str(out / name))
    series = {f"{m} @ {x:g} req/s": records[m][x] for x in sorted(set(rates.values()))
              for m in records}
    paths.append(str(plot_latency_cdfs(series, out / "latency_cdf.png", slo,
                                       title="latency CDFs")))
    paths.append(str(_plot_breakdown(plt, results, rates["loaded"], out)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in results:
        pts = [(o["slo_tpot_ms"], o[mode]["max_rate_meeting_slo"] or 0.0) for o in objectives]
        ax.plot(*zip(*pts), marker="o", label=mode)
    ax.set(xscale="log", xlabel="TPOT objective (ms)", ylabel="highest rate meeting SLO (req/s)",
           title=f"best passing rate vs TPOT objective (TTFT<={slo.ttft_ms:g} ms; 0 = none)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rate_vs_tpot_objective.png", dpi=100)
    plt.close(fig)
    return [*paths, str(out / "rate_vs_tpot_objective.png")]


def _mode_per_token(breakdown: dict[str, Any], key: str) -> float:
    """A configuration's engine ms per decode token: its workers' figures, token-weighted."""
    ws = [w for w in breakdown["workers"].values() if w[key] is not None]
    tokens = sum(w["decode_tokens"] for w in ws)
    return sum(w[key] * w["decode_tokens"] for w in ws) / tokens if tokens else float("nan")


def _plot_breakdown(plt: Any, results: dict[str, dict[str, Any]], rate: float, out: Path) -> Path:
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.8))
    at = {m: next(s for s in r["sweep"]["steps"] if s["rate"] == rate)["breakdown"]
          for m, r in results.items()}
    bars = [(f"{m[:6]}.\n{n.removeprefix('tandem-')}", w) for m, bd in at.items()
            for n, w in bd["workers"].items()]
    bottom = [0.0] * len(bars)
    for key, color in (("prefill_only_fraction", "tab:orange"), ("mixed_fraction", "tab:red"),
                       ("decode_only_fraction", "tab:blue")):
        vals = [w[key] for _, w in bars]
        a.bar([n for n, _ in bars], vals, bottom=bottom, color=color,
              label=key.removesuffix("_fraction").replace("_", " ") + " steps")
        bottom = [x + v for x, v in zip(bottom, vals)]
    a.set(ylabel="fraction of wall time", ylim=(0, 1.05), title=f"engine busy by step kind @ {rate:g} req/s")
    a.legend(fontsize=8)
    for mode, r in results.items():
        for key, style in (("step_ms_per_decode_token", "-"),
                           ("step_ms_per_decode_token_decode_only_steps", ":")):
            pts = [(s["rate"], _mode_per_token(s["breakdown"], key)) for s in r["sweep"]["steps"]]
            b.plot(*zip(*pts), style, marker="o", markersize=3,
                   label=mode + ("" if style == "-" else " (decode-only steps)"))
    b.set(xlabel="offered rate (req/s)", ylabel="ms per decode token",
          title="engine time per decode token (token-weighted step time)")
    b.grid(True, alpha=0.3)
    b.legend(fontsize=7)
    bottom = [0.0] * len(at)
    for key, color in (("workers", "tab:blue"), ("router_process", "tab:green"),
                       ("load_generator", "tab:purple"), ("other_processes", "tab:grey")):
        vals = [max(0.0, bd["cores_busy"][key]) for bd in at.values()]
        c.bar(list(at), vals, bottom=bottom, color=color, label=key.replace("_", " "))
        bottom = [x + v for x, v in zip(bottom, vals)]
    c.axhline(2.0, color="red", linestyle="--", linewidth=1, label="2 cores")
    c.set(ylabel="cores busy", title=f"CPU by process @ {rate:g} req/s")
    c.legend(fontsize=8)
    fig.tight_layout()
    path = out / "time_breakdown.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _reload(out: Path, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """The last run's results, records and engine costs (``--reanalyse``), at its own SLO."""
    last = {"engine_costs": {}}
    if (out / "sweep.json").exists():   # else the objectives given now
        last = json.loads((out / "sweep.json").read_text())
        args.ttft_ms, args.tpot_ms = last["objectives"]["slo_ttft_ms"], last["objectives"]["slo_tpot_ms"]
    results = measured_configs(out)
    records = {m: {s["rate"]: _load_records(Path(s["result"]).parent / "requests.jsonl")
                   for s in r["sweep"]["steps"]} for m, r in results.items()}
    return results, records, last["engine_costs"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="azure-conv",
                   help="results of a workload other than azure-conv go to a subfolder")
    p.add_argument("--rates", default="1,1.5,2,2.5,3,4,5,6", help="offered rates (req/s), increasing")
    p.add_argument("--requests", type=int, default=80, help="trace rows replayed per rate")
    p.add_argument("--duration", type=float, default=45.0, help="sending stops after this (s)")
    p.add_argument("--ttft-ms", type=float, default=1000.0, help="TTFT objective")
    p.add_argument("--tpot-ms", type=float, default=8.0, help="TPOT objective (tight)")
    p.add_argument("--breakdown-rate", type=float, default=4.0,
                   help="a rate where both configurations are busy: figures and breakdown there")
    p.add_argument("--quick", action="store_true", help="3 rates, 30 requests each (a smoke run)")
    p.add_argument("--modes", default="disaggregated,colocated,colocated-b256",
                   help="configurations: disaggregated, colocated (a 2,048-token step budget: a "
                        "prompt is one step) and colocated-bN (chunked prefill, N tokens a step); "
                        "the comparison takes the best colocated one at each objective")
    p.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/...)")
    p.add_argument("--scratch-tag", default="",
                   help="a subfolder of the load generator's reports (a rerun that keeps the last's)")
    p.add_argument("--reanalyse", action="store_true",
                   help="no new runs: recompute figures and plots from the last run's files")
    args = p.parse_args()
    if args.quick:
        args.rates, args.requests, args.duration = "1,3,6", 30, 15.0
    rates = [float(x) for x in args.rates.split(",")]
    # Every rate in both modes (no early stop): full curves, and steps to re-judge.
    args.policy = SweepPolicy(mode="grid", rates=rates, patience=len(rates))
    out = args.out or (RESULTS if args.workload == "azure-conv" else RESULTS / args.workload)
    # The load generator's per-rate reports: a folder per results folder.
    args.scratch = SCRATCH / (out.resolve().relative_to(RESULTS) if out.resolve().is_relative_to(RESULTS)
                              else args.workload) / args.scratch_tag
    out.mkdir(parents=True, exist_ok=True)
    if args.reanalyse:
        results, records, costs = _reload(out, args)
    else:
        results, records, costs = {}, {}, engine_costs()
        for mode in args.modes.split(","):
            results[mode], records[mode] = measure(mode, args)
            (out / f"{mode}.json").write_text(json.dumps(results[mode], indent=1))
    print(json.dumps({"bench": "disagg_vs_colocated", "figure": "engine_costs_one_thread", **costs}),
          flush=True)
    if "disaggregated" not in results or not any(m.startswith("colocated") for m in results):
        return
    slo = SLO(args.ttft_ms, args.tpot_ms)
    for m, r in results.items():
        if m.startswith("colocated"):
            print(json.dumps({"bench": "disagg_vs_colocated", "figure": "colocated_budget",
                              "config": m, "overrides": r["overrides"][len(COMMON):],
                              "slo_ttft_ms": args.ttft_ms, "slo_tpot_ms": args.tpot_ms,
                              **{k: r["sweep"][k] for k in ("max_rate_meeting_slo",
                                                            "max_goodput_rps")}}), flush=True)
    best = best_colocated(results)
    pair = {"disaggregated": results["disaggregated"], "colocated": results[best]}
    pair_records = {"disaggregated": records["disaggregated"], "colocated": records[best]}
    doc, lines = compare(pair, slo, args.breakdown_rate)
    doc["colocated_config"] = best
    doc["by_tpot_objective"] = by_objective(results, records, args.policy, args.ttft_ms, TPOT_GRID)
    for row in doc["by_tpot_objective"]:
        for key in ("max_rate_meeting_slo", "max_goodput_rps"):
            dv, cv = row["disaggregated"][key], row["colocated"][key]
            lines.append({"bench": "disagg_vs_colocated", "figure": f"{key}_by_tpot_objective",
                          "slo_ttft_ms": args.ttft_ms, "slo_tpot_ms": row["slo_tpot_ms"],
                          "disaggregated": dv, "colocated": cv, "colocated_config":
                          row["colocated_config"][key], "ratio": _ratio(dv, cv)})
            if "disaggregated-overflow" in row:
                ov = row["disaggregated-overflow"][key]
                lines.append({"bench": "disagg_vs_colocated", "figure": f"{key}_by_tpot_objective_overflow",
                              "slo_ttft_ms": args.ttft_ms, "slo_tpot_ms": row["slo_tpot_ms"],
                              "disaggregated_overflow": ov, "disaggregated": dv, "colocated": cv,
                              "vs_colocated": _ratio(ov, cv), "vs_disaggregated": _ratio(ov, dv)})
    doc["files"] = plots(pair, pair_records, slo, doc["rates"], doc["by_tpot_objective"], out)
    doc["engine_costs"] = costs
    doc["run"] = {"argv": sys.argv, "model": MODEL, "workload": workload_args(args.workload),
                  "requests_per_rate": args.requests, "cpus": os.cpu_count(),
                  "python": sys.version.split()[0]}
    doc["sweeps"] = {m: {**r["sweep"], "steps": [{k: v for k, v in s.items() if k not in
                                                   ("breakdown", "latency_ms", "goodput")}
                                                  for s in r["sweep"]["steps"]]}
                     for m, r in results.items()}   # the full steps: <mode>.json
    (out / "sweep.json").write_text(json.dumps(doc, indent=1))
    for item in lines:
        print(json.dumps(item), flush=True)


if __name__ == "__main__":
    main()
