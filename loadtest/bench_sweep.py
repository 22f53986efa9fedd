"""A rate sweep end to end: one run per rate (each with its own report directory), then
``sweep.json`` and the plots of SLO attainment, goodput and latency against rate."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtest.bench import BenchConfig, RunReport, run_benchmark
from loadtest.report import SCHEMA, environment, write_json
from loadtest.spec import Workload
from loadtest.sweep import StepResult, SweepPolicy, judge, run_sweep
from loadtest.targets.base import make_target


async def run_rate_sweep(cfg: BenchConfig, workload: Workload, policy: SweepPolicy,
                         out_dir: Path) -> dict[str, Any]:
    """Sweep ``workload`` over rates per ``policy``; write ``out_dir/sweep.json`` and plots."""
    workload.with_rate(policy.rates[0] if policy.mode == "grid" else policy.low)  # fail fast
    out_dir.mkdir(parents=True, exist_ok=True)
    target = make_target(cfg.target_url, cfg.target_options)
    info = await target.open()
    reports: dict[float, RunReport] = {}
    base_seed = int(getattr(workload, "seed", 0))

    async def run_at(rate: float) -> StepResult:
        # A fresh seed per step: the same prompts again would hit the cache the last step warmed.
        step_workload = workload.with_rate(rate, seed=base_seed + 7919 * (len(reports) + 1))
        report = await run_benchmark(cfg, step_workload, out_dir / f"rate_{rate:.4g}",
                                     target=target, info=info, label=f"{rate:.3g} req/s")
        reports[rate] = report
        return judge(rate, report.result["figures"], policy, report.interrupted,
                     report.result["files"]["result_json"])

    try:
        summary = await run_sweep(policy, run_at)
    finally:
        await target.close()
    result: dict[str, Any] = {
        "schema": SCHEMA, "kind": "sweep",
        "config": {"target": target.describe(), "workload": workload.describe(),
                   "limits_per_step": asdict(cfg.limits), "slo": asdict(cfg.slo),
                   "metrics_url": cfg.metrics_url},
        "environment": environment(), "target": info.to_dict(), "sweep": summary, "files": {}}
    if cfg.plots and summary["steps"]:
        result["files"] = _plots(cfg, summary, reports, out_dir, policy)
    result["files"]["sweep_json"] = str(out_dir / "sweep.json")
    write_json(out_dir / "sweep.json", result)
    if not cfg.quiet:
        print(format_sweep(result), file=sys.stdout, flush=True)
    return result


def _plots(cfg: BenchConfig, summary: dict[str, Any], reports: dict[float, RunReport],
           out_dir: Path, policy: SweepPolicy) -> dict[str, str]:
    try:
        from loadtest.plots import plot_latency_cdfs, plot_vs_rate
    except ImportError:
        return {}
    rates = [s["rate"] for s in summary["steps"]]
    files = {
        "slo_attainment_vs_rate_png": str(plot_vs_rate(
            rates, [s["slo_attainment"] for s in summary["steps"]],
            out_dir / "slo_attainment_vs_rate.png", ylabel="SLO attainment",
            title=f"SLO attainment (TTFT<={cfg.slo.ttft_ms:g} ms, TPOT<={cfg.slo.tpot_ms:g} ms)",
            target=policy.attainment_target)),
        "goodput_vs_rate_png": str(plot_vs_rate(
            rates, [s["goodput_rps"] for s in summary["steps"]], out_dir / "goodput_vs_rate.png",
            ylabel="goodput (req/s)", title="goodput vs offered rate", ideal=True)),
        "latency_cdf_png": str(plot_latency_cdfs(
            {f"{rate:.3g} req/s": reports[rate].records for rate in sorted(reports)},
            out_dir / "latency_cdf.png", cfg.slo, title="latency CDFs by offered rate")),
    }
    return files


def format_sweep(result: dict[str, Any]) -> str:
    s = result["sweep"]
    lines = [f"sweep ({s['policy']['mode']}): stopped: {s['stop_reason']}",
             f"  {'rate':>8} {'sent/s':>7} {'pass':>5} {'attain':>7} {'goodput':>8} {'sustain':>7} "
             f"{'ttft p99':>9} {'tpot p99':>9}  saturation"]
    for st in s["steps"]:
        def cell(v: Any, fmt: str) -> str:
            return format(v, fmt) if v is not None else "-"
        lines.append(f"  {st['rate']:>8.3g} {cell(st['send_rate_rps'], '>7.3g')} "
                     f"{('yes' if st['passed'] else 'no'):>5} "
                     f"{st['slo_attainment']:>7.1%} {st['goodput_rps']:>8.3g} "
                     f"{cell(st['sustained_rps'], '>7.3g')} {cell(st['ttft_p99_ms'], '>9.1f')} "
                     f"{cell(st['tpot_p99_ms'], '>9.1f')}  {'; '.join(st['saturation'])}")
    def fig(v: Any, unit: str) -> str:
        return f"{v:.3g} {unit}" if v is not None else "none"
    lines.append(f"  max rate meeting SLO: {fig(s['max_rate_meeting_slo'], 'req/s')}; goodput "
                 f"there: {fig(s['goodput_at_max_rate'], 'req/s')}; first failing rate: "
                 f"{fig(s['first_failing_rate'], 'req/s')}")
    return "\n".join(lines)
