"""One benchmark run end to end: open the target, scrape metrics, run, write every report.

    report = asyncio.run(run_benchmark(BenchConfig("tandem://127.0.0.1:50051"), workload,
                                       Path("out/run1")))
    report.result["figures"]["goodput"]["goodput_rps"]
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.metrics import SLO, summarize
from loadtest.progress import ProgressBar
from loadtest.record import RequestRecord
from loadtest.report import SCHEMA, environment, format_summary, write_json, write_requests
from loadtest.runner import Runner, RunLimits, RunOutcome
from loadtest.scrape import MetricNames, MetricsScraper
from loadtest.spec import Workload
from loadtest.synthetic import expected_rate, expected_user_rate
from loadtest.targets.base import Target, TargetInfo, TargetOptions, make_target

logger = logging.getLogger(__name__)

DEFINITIONS = ("latency percentiles over ok requests; TPOT = (e2e - ttft) / (completion_tokens "
               "- 1); good = ok and within every SLO; slo_attainment = good / all requests "
               "(failures included); goodput_rps = good / duration_s (t0 to last request end)")


@dataclass(slots=True)
class RunReport:
    """A finished run: its ``result.json`` document and its request records."""
    result: dict[str, Any]
    records: list[RequestRecord]

    @property
    def interrupted(self) -> bool:
        return bool(self.result["outcome"]["interrupted"])


@dataclass(slots=True)
class BenchConfig:
    """Everything about a run except the workload."""
    target_url: str
    target_options: TargetOptions = field(default_factory=TargetOptions)
    limits: RunLimits = field(default_factory=RunLimits)
    slo: SLO = field(default_factory=SLO)
    metrics_url: str | None = None
    metrics_interval_s: float = 1.0
    metric_names: MetricNames = field(default_factory=MetricNames)
    plots: bool = True
    progress: bool = True
    quiet: bool = False


class _InterruptHandler:
    """Ctrl-C / SIGTERM stop the runner (which then writes partial results); a second
    Ctrl-C falls back to the default handler."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.installed: list[signal.Signals] = []

    def __enter__(self) -> _InterruptHandler:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._fire, sig)
                self.installed.append(sig)
                logger.debug("installed %s handler", sig.name)
            except (NotImplementedError, RuntimeError, ValueError):
                logger.debug("no %s handler: not the main thread", sig.name)
        return self

    def _fire(self, sig: signal.Signals) -> None:
        logger.warning("%s: stopping the run and writing partial results", sig.name)
        self.runner.request_stop("interrupted")
        self.__exit__()

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self.installed:
            loop.remove_signal_handler(sig)
        self.installed = []


async def run_benchmark(cfg: BenchConfig, workload: Workload, out_dir: Path, *,
                        target: Target | None = None, info: TargetInfo | None = None,
                        label: str = "") -> RunReport:
    """Run ``workload`` and write ``out_dir``'s report files.
    Pass an opened ``target`` and its ``info`` to reuse a connection (sweeps)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    own_target = target is None
    if target is None:
        target = make_target(cfg.target_url, cfg.target_options)
        info = await target.open()
    if info is None:
        raise ValueError("info is required with an opened target")
    try:
        return await _run(cfg, workload, out_dir, target, info, label)
    finally:
        if own_target:
            await target.close()


async def _run(cfg: BenchConfig, workload: Workload, out_dir: Path, target: Target,
               info: TargetInfo, label: str) -> RunReport:
    bar = ProgressBar(label=label) if cfg.progress and not cfg.quiet else None
    runner = Runner(target, workload, info, cfg.limits, progress=bar)
    scraper = None
    if cfg.metrics_url:
        scraper = MetricsScraper(cfg.metrics_url, cfg.metrics_interval_s, cfg.metric_names)
        await scraper.start()
    try:
        with _InterruptHandler(runner):
            outcome = await runner.run()
    finally:
        if bar is not None:
            bar.finish()
        cluster_metrics = await scraper.stop() if scraper else None
    server_after = await target.scrape_info()
    result = build_result(cfg, workload, target, info, runner.run_id, outcome, cluster_metrics,
                          server_after)
    write_outputs(cfg, result, outcome, out_dir)
    if not cfg.quiet:
        print(format_summary(result), file=sys.stdout, flush=True)
    return RunReport(result, outcome.records)


def build_result(cfg: BenchConfig, workload: Workload, target: Target, info: TargetInfo,
                 run_id: str, outcome: RunOutcome, cluster_metrics: dict[str, Any] | None,
                 server_after: dict[str, Any]) -> dict[str, Any]:
    """The ``result.json`` document of a run."""
    return {
        "schema": SCHEMA, "kind": "run", "run_id": run_id,
        "config": {"target": target.describe(), "workload": workload.describe(),
                   "limits": asdict(cfg.limits), "slo": asdict(cfg.slo),
                   "metrics_url": cfg.metrics_url},
        "environment": environment(),
        "target": info.to_dict(),
        "outcome": {"started_at": outcome.started_at, "duration_s": outcome.duration_s,
                    "stop_reason": outcome.stop_reason, "interrupted": outcome.interrupted,
                    "status_counts": outcome.status_counts},
        "figures": summarize(outcome.records, outcome.duration_s, cfg.slo,
                             expected_rate(workload), expected_user_rate(workload)),
        "definitions": DEFINITIONS,
        "cluster_metrics": cluster_metrics,
        "server_after": server_after,
        "files": {},
    }


def write_outputs(cfg: BenchConfig, result: dict[str, Any], outcome: RunOutcome,
                  out_dir: Path) -> None:
    """Per-request files, the CDF plot, then ``result.json`` (listing them)."""
    files = write_requests(out_dir, outcome.records)
    if cfg.plots:
        try:
            from loadtest.plots import plot_latency_cdfs
            path = plot_latency_cdfs({result["run_id"]: outcome.records},
                                     out_dir / "latency_cdf.png", cfg.slo,
                                     title=f"latency CDFs, run {result['run_id']}")
            files["latency_cdf_png"] = str(path)
        except ImportError as exc:
            result["plots_skipped"] = f"matplotlib unavailable: {exc}"
    files["result_json"] = str(out_dir / "result.json")
    result["files"] = files
    write_json(out_dir / "result.json", result)
