"""``tandem bench run|sweep|compare``: register with ``add_commands(subparsers)``.

Standalone: ``python -m loadtest run|sweep|compare ...``.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from loadtest.errors import SpecError
from loadtest.options import add_run_options, bench_config, build_workload


def _out_dir(args: argparse.Namespace, kind: str) -> Path:
    if args.out is not None:
        return args.out
    return Path("bench-results") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def _cmd_run(args: argparse.Namespace) -> int:
    from loadtest.bench import run_benchmark
    cfg = bench_config(args)
    workload = build_workload(args)
    report = asyncio.run(run_benchmark(cfg, workload, _out_dir(args, "run")))
    return 130 if report.interrupted else 0


def _rates(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SpecError(f"--rates must be comma-separated numbers, got {text!r}") from None


def _cmd_sweep(args: argparse.Namespace) -> int:
    from loadtest.bench_sweep import run_rate_sweep
    from loadtest.sweep import SweepPolicy
    if (args.rates is None) == (args.bisect is None):
        raise SpecError("give --rates R1,R2,... (grid) or --bisect LOW:HIGH")
    common = dict(attainment_target=args.attainment, max_failure_fraction=args.max_failures,
                  min_throughput_ratio=args.min_throughput_ratio, max_steps=args.max_steps,
                  patience=args.patience)
    if args.rates is not None:
        policy = SweepPolicy(mode="grid", rates=_rates(args.rates), **common)
    else:
        low, sep, high = args.bisect.partition(":")
        try:
            policy = SweepPolicy(mode="bisect", low=float(low), high=float(high),
                                 tolerance=args.tolerance, **common)
        except ValueError as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"--bisect must be LOW:HIGH, got {args.bisect!r}") from None
        if not sep:
            raise SpecError(f"--bisect must be LOW:HIGH, got {args.bisect!r}")
    cfg = bench_config(args)
    first = policy.rates[0] if policy.mode == "grid" else policy.low
    workload = build_workload(args, default_rate=first)
    result = asyncio.run(run_rate_sweep(cfg, workload, policy, _out_dir(args, "sweep")))
    return 130 if result["sweep"]["stop_reason"] == "interrupted" else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from loadtest.compare import compare_files
    print(compare_files(args.a, args.b))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bench`` and its subcommands on a ``tandem`` CLI's subparsers."""
    bench = subparsers.add_parser("bench", help="load-test a Tandem cluster or an OpenAI endpoint",
                                  description="Load tests: run, sweep rates, compare results.")
    add_bench_subcommands(bench)
    return bench


def add_bench_subcommands(bench: argparse.ArgumentParser) -> None:
    sub = bench.add_subparsers(dest="bench_command", required=True)
    run = sub.add_parser("run", help="one bounded load-test run")
    add_run_options(run)
    run.set_defaults(func=_cmd_run)

    sweep = sub.add_parser("sweep", help="find the highest rate meeting the SLOs")
    add_run_options(sweep)
    s = sweep.add_argument_group("sweep")
    s.add_argument("--rates", help="grid: comma-separated rates (req/s)")
    s.add_argument("--bisect", help="bisection between LOW:HIGH req/s")
    s.add_argument("--tolerance", type=float, default=0.1, help="bisection: relative width")
    s.add_argument("--max-steps", type=int, default=10)
    s.add_argument("--attainment", type=float, default=0.9, help="SLO attainment to pass")
    s.add_argument("--max-failures", type=float, default=0.05,
                   help="over-saturated above this fraction of failed requests")
    s.add_argument("--min-throughput-ratio", type=float, default=0.8,
                   help="over-saturated when completing under this fraction of the offered rate")
    s.add_argument("--patience", type=int, default=0, help="grid: steps after the first failure")
    sweep.set_defaults(func=_cmd_sweep)

    compare = sub.add_parser("compare", help="two result.json/sweep.json side by side")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.set_defaults(func=_cmd_compare)
