"""Tandem's load-test harness (``tandem bench``): synthetic, trace-replay and multi-turn
workloads, open- and closed-loop, against a Tandem router (gRPC) or any OpenAI-compatible
endpoint (HTTP); per-request measurements, goodput at SLOs, rate sweeps, reports and plots.

See ``docs/loadtest.md``.
"""
from loadtest.bench import BenchConfig, RunReport, run_benchmark
from loadtest.metrics import SLO, summarize
from loadtest.runner import RunLimits, Runner
from loadtest.spec import Plan, RequestSpec, Session, Workload
from loadtest.targets.base import Target, TargetInfo, TargetOptions, make_target

__all__ = ["BenchConfig", "Plan", "RequestSpec", "RunLimits", "RunReport", "Runner", "SLO",
           "Session", "Target", "TargetInfo", "TargetOptions", "Workload", "make_target",
           "run_benchmark", "summarize"]
