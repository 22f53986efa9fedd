"""``tandem profile`` and ``tandem plan`` (cluster.planner)."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_profile(args: argparse.Namespace) -> int:
    from cluster.planner.profile import roofline
    if args.roofline:
        model, _, rest = args.roofline.partition(":")
        accel, _, gpus = rest.partition(":")
        try:
            prof = roofline(model, accel or "h100", int(gpus or 8))
        except KeyError as exc:
            raise ValueError(f"--roofline: unknown model or accelerator {exc}; models: llama-70b, llama-8b; "
                             "accelerators: h100, a100") from None
    else:
        from cluster.planner.measure import measure
        prof = measure(args.model, args.threads, args.reps, through_cluster=not args.engine_only)
    if args.out:
        prof.save(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(prof.to_json())
    return 0


def _workload(args: argparse.Namespace):
    from cluster.planner.simulator import Workload
    spec = args.workload
    if spec.startswith("synthetic:"):
        try:
            _, prompt, output = spec.split(":")
            return Workload.synthetic(args.requests, args.rate or 1.0, int(prompt), int(output), seed=args.seed)
        except ValueError:
            raise ValueError(f"--workload {spec!r}: want synthetic:<prompt tokens>:<output tokens>") from None
    return Workload.from_trace(spec, limit=args.requests, max_len=args.max_model_len)


def _cmd_plan(args: argparse.Namespace) -> int:
    from cluster.planner.plan import fewest, plan, run_config
    from cluster.planner.profile import Profile
    prof = Profile.load(args.profile)
    workers = args.workers
    if args.gpus:
        if not prof.gpus_per_worker:
            raise ValueError("--gpus needs a GPU profile (gpus_per_worker > 0); give --workers")
        workers = args.gpus // prof.gpus_per_worker
    if not workers or workers < 1:
        raise ValueError("give --workers N (or --gpus N with a GPU profile)")
    if args.fewest:
        if args.rate is None:
            raise ValueError("--fewest needs --rate: the rate the fewest workers must serve")
        needed, ranked = fewest(prof, _workload(args), args.rate, args.ttft_ms, args.tpot_ms,
                                attainment=args.attainment, max_workers=workers, max_splits=args.max_splits)
        print(json.dumps({"fewest_workers": needed, "gpus": needed * prof.gpus_per_worker,
                          "rate": args.rate, "attainment_target": args.attainment}))
    else:
        ranked = plan(prof, _workload(args), workers, args.ttft_ms, args.tpot_ms, rate=args.rate,
                      attainment=args.attainment, max_splits=args.max_splits)
    for rank, c in enumerate(ranked[:args.top], 1):
        print(json.dumps({"rank": rank, **c.row()}))
    best = run_config(ranked[0].layout, prof)
    print(json.dumps({"best": ranked[0].layout.describe(), **best}))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure a worker's costs (or derive them from a roofline) as a JSON profile")
    p.add_argument("--model", default="stories260K")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the measured worker")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--engine-only", action="store_true",
                   help="skip the serving overhead (measured through a one-worker cluster it starts)")
    p.add_argument("--roofline", metavar="MODEL[:ACCEL[:GPUS]]",
                   help="no measurement: a roofline profile, e.g. llama-70b:h100:8")
    p.add_argument("--out", help="write the profile here (default: stdout)")
    p.set_defaults(func=_cmd_profile)

    q = sub.add_parser("plan", help="rank layouts for a profile, a workload and TTFT/TPOT objectives")
    q.add_argument("--profile", required=True, help="a profile JSON (tandem profile)")
    q.add_argument("--workload", default="mooncake-conv",
                   help="a shipped trace (azure-code, azure-conv, mooncake-conv, mooncake-synth), a trace "
                        "file, or synthetic:<prompt>:<output>")
    q.add_argument("--requests", type=int, default=2000)
    q.add_argument("--max-model-len", type=int, default=None, help="clip trace lengths to this context")
    q.add_argument("--workers", type=int, help="workers to place")
    q.add_argument("--gpus", type=int, help="GPUs to place (a GPU profile's gpus_per_worker each)")
    q.add_argument("--ttft-ms", type=float, required=True)
    q.add_argument("--tpot-ms", type=float, required=True)
    q.add_argument("--rate", type=float, help="judge every layout at this rate (else: each one's max goodput)")
    q.add_argument("--fewest", action="store_true",
                   help="with --rate: the fewest workers (up to --workers / --gpus) meeting the objectives")
    q.add_argument("--attainment", type=float, default=0.9)
    q.add_argument("--max-splits", type=int, default=24, help="P:D splits tried on large fleets")
    q.add_argument("--top", type=int, default=10)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_plan)
