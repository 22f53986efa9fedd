"""Command-line options of ``tandem bench run|sweep`` and the objects they build."""
from __future__ import annotations

import argparse
from pathlib import Path

from loadtest.arrivals import arrival_names, make_arrival
from loadtest.bench import BenchConfig
from loadtest.distributions import parse_length
from loadtest.errors import SpecError
from loadtest.metrics import SLO
from loadtest.multiturn import MultiTurnWorkload
from loadtest.replay import TraceTransform, TraceWorkload
from loadtest.runner import RunLimits
from loadtest.scrape import MetricNames
from loadtest.spec import Workload
from loadtest.synthetic import SyntheticWorkload
from loadtest.targets.base import TargetOptions
from loadtest.traces import load_trace, trace_names

WORKLOADS = ("synthetic", "trace", "multiturn")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Target, workload, caps, SLO, metrics and output options (shared by run and sweep)."""
    t = p.add_argument_group("target")
    t.add_argument("--target", required=True,
                   help="tandem://HOST:PORT (gRPC router) or http://HOST:PORT (OpenAI-compatible)")
    t.add_argument("--model", help="OpenAI: model name (default: the first one served)")
    t.add_argument("--vocab-size", type=int, help="OpenAI: the model's vocabulary size")
    t.add_argument("--max-model-len", type=int, help="override the model's context length")
    t.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request")
    t.add_argument("--temperature", type=float, default=0.0)
    t.add_argument("--no-ignore-eos", action="store_true",
                   help="let the model stop at EOS (output lengths then vary)")
    t.add_argument("--retries", type=int, default=0, help="SDK retries of UNAVAILABLE")

    w = p.add_argument_group("workload")
    w.add_argument("--workload", choices=WORKLOADS, default="synthetic")
    w.add_argument("--input-len", default="uniform:32,256", help="synthetic prompt lengths "
                   "(fixed:N, uniform:A,B, normal:MEAN,STD, lognormal:MEDIAN,SIGMA, empirical:FILE)")
    w.add_argument("--output-len", default="uniform:16,64", help="synthetic output lengths")
    w.add_argument("--shared-prefix", type=int, default=0,
                   help="synthetic: tokens of a prefix shared by every prompt")
    w.add_argument("--arrival", choices=[*arrival_names(), "closed"], default="poisson",
                   help="open-loop arrival process, or closed loop at --concurrency")
    w.add_argument("--rate", type=float, help="open-loop requests/s (trace: rescales time to "
                   "this mean rate; multiturn: users/s)")
    w.add_argument("--cv", type=float, help="gamma: inter-arrival coefficient of variation")
    w.add_argument("--concurrency", type=int, help="closed loop: requests (users) at a time")
    w.add_argument("--max-output", type=int, help="clip output lengths (default: half the context)")
    w.add_argument("--seed", type=int, default=0)

    r = p.add_argument_group("trace replay (--workload trace)")
    r.add_argument("--trace", help=f"one of {', '.join(trace_names())}, or a .csv/.jsonl path")
    r.add_argument("--trace-start", type=int, default=0, help="first trace row")
    r.add_argument("--trace-rows", type=int, help="number of trace rows to load")
    r.add_argument("--time-scale", type=float, help="multiply trace timestamps by this")
    r.add_argument("--input-scale", type=float, help="multiply prompt lengths by this")
    r.add_argument("--block-tokens", type=int,
                   help="Mooncake: tokens per hash block (sets input scale = N/512)")
    r.add_argument("--output-scale", type=float, default=1.0, help="multiply output lengths")

    m = p.add_argument_group("multi-turn conversations (--workload multiturn)")
    m.add_argument("--users", type=int, help="number of users (default: as the caps allow)")
    m.add_argument("--turns", type=int, default=4)
    m.add_argument("--system-prompt-len", type=int, default=64)
    m.add_argument("--user-context-len", type=int, default=32)
    m.add_argument("--question-len", default="uniform:8,32")
    m.add_argument("--answer-len", default="uniform:8,32")
    m.add_argument("--think-time", type=float, default=0.0, help="seconds between turns")

    c = p.add_argument_group("caps, SLOs, metrics, output")
    c.add_argument("--max-requests", type=int, default=100, help="request cap")
    c.add_argument("--duration", type=float, default=60.0, help="sending stops after this (s)")
    c.add_argument("--drain-timeout", type=float, default=30.0,
                   help="after --duration, seconds left to requests in flight")
    c.add_argument("--max-inflight", type=int, default=1000)
    c.add_argument("--slo-ttft-ms", type=float, default=1000.0)
    c.add_argument("--slo-tpot-ms", type=float, default=100.0)
    c.add_argument("--slo-e2e-ms", type=float)
    c.add_argument("--metrics-url", help="Prometheus text endpoint to scrape during the run")
    c.add_argument("--metrics-interval", type=float, default=1.0)
    c.add_argument("--out", type=Path, help="output directory (default: bench-results/<time>)")
    c.add_argument("--no-plots", action="store_true")
    c.add_argument("--no-progress", action="store_true")
    c.add_argument("--quiet", action="store_true", help="no progress bar, no summary")


def bench_config(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        target_url=args.target,
        target_options=TargetOptions(
            request_timeout_s=args.request_timeout, temperature=args.temperature,
            ignore_eos=not args.no_ignore_eos, model=args.model, vocab_size=args.vocab_size,
            max_model_len=args.max_model_len, retries=args.retries),
        limits=RunLimits(max_requests=args.max_requests, max_duration_s=args.duration,
                         drain_timeout_s=args.drain_timeout,
                         request_timeout_s=args.request_timeout,
                         max_inflight=args.max_inflight),
        slo=SLO(args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2e_ms),
        metrics_url=args.metrics_url, metrics_interval_s=args.metrics_interval,
        metric_names=MetricNames(), plots=not args.no_plots,
        progress=not args.no_progress, quiet=args.quiet)


def _schedule(args: argparse.Namespace, default_rate: float | None):
    """(arrival process, concurrency) from --arrival/--rate/--cv/--concurrency."""
    if args.arrival == "closed":
        if args.concurrency is None:
            raise SpecError("--arrival closed needs --concurrency")
        if args.rate is not None or args.cv is not None:
            raise SpecError("--rate and --cv do not apply to a closed loop")
        return None, args.concurrency
    if args.concurrency is not None:
        raise SpecError("--concurrency applies to --arrival closed only")
    rate = args.rate if args.rate is not None else default_rate
    if rate is None:
        raise SpecError("an open-loop workload needs --rate")
    return make_arrival(args.arrival, rate, args.cv), None


def build_workload(args: argparse.Namespace, default_rate: float | None = 2.0) -> Workload:
    """The workload the options describe (``default_rate``: when --rate is absent)."""
    if args.workload == "synthetic":
        arrival, concurrency = _schedule(args, default_rate)
        return SyntheticWorkload(parse_length(args.input_len), parse_length(args.output_len),
                                 arrival=arrival, concurrency=concurrency,
                                 shared_prefix=args.shared_prefix, max_output=args.max_output,
                                 seed=args.seed)
    if args.workload == "multiturn":
        arrival, concurrency = _schedule(args, default_rate)
        return MultiTurnWorkload(
            turns=args.turns, question_len=parse_length(args.question_len),
            answer_len=parse_length(args.answer_len), users=args.users,
            system_prompt_len=args.system_prompt_len, user_context_len=args.user_context_len,
            think_time_s=args.think_time, arrival=arrival, concurrency=concurrency,
            max_output=args.max_output, seed=args.seed)
    if not args.trace:
        raise SpecError("--workload trace needs --trace")
    if args.arrival != "poisson" or args.cv is not None or args.concurrency is not None:
        raise SpecError("a trace replays its own arrival times: --arrival, --cv and "
                        "--concurrency do not apply (use --rate or --time-scale)")
    trace = load_trace(args.trace, start=args.trace_start, limit=args.trace_rows)
    transform = TraceTransform(time_scale=args.time_scale, rate=args.rate,
                               input_scale=args.input_scale, block_tokens=args.block_tokens,
                               output_scale=args.output_scale, max_output=args.max_output)
    return TraceWorkload(trace, transform, seed=args.seed)
