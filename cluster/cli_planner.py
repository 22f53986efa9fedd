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
    from cluster.planner.plan import fewest_resources, plan_resources, run_config, unit
    from cluster.planner.profile import Profile
    profiles = [Profile.load(path) for path in args.profile]
    kind, per = unit(profiles[0])
    if args.cores and args.gpus:
        raise ValueError("give --cores or --gpus, not both")
    if args.workers:
        if len(profiles) > 1:
            raise ValueError("several profiles (worker sizes) need --cores or --gpus, not --workers")
        resources = args.workers * per
    elif args.gpus or args.cores:
        if (kind == "gpus") != bool(args.gpus):
            raise ValueError(f"these are {'GPU' if kind == 'gpus' else 'CPU'} profiles: give "
                             f"--{'gpus' if kind == 'gpus' else 'cores'}")
        resources = args.gpus or args.cores
    else:
        raise ValueError("give --workers N, --cores N (CPU profiles) or --gpus N (GPU profiles)")
    if args.fewest:
        if args.rate is None:
            raise ValueError("--fewest needs --rate: the rate the fewest workers must serve")
        needed, ranked = fewest_resources(profiles, _workload(args), args.rate, args.ttft_ms, args.tpot_ms,
                                          attainment=args.attainment, max_resources=resources,
                                          max_splits=args.max_splits)
        top = ranked[0].profile
        print(json.dumps({f"fewest_{kind}": needed, "fewest_workers": needed // unit(top)[1],
                          "gpus": needed if kind == "gpus" else 0, "profile": top.name,
                          "rate": args.rate, "attainment_target": args.attainment}))
    else:
        ranked = plan_resources(profiles, _workload(args), resources, args.ttft_ms, args.tpot_ms, rate=args.rate,
                                attainment=args.attainment, max_splits=args.max_splits,
                                host_cores=args.host_cores)
    for rank, c in enumerate(ranked[:args.top], 1):
        print(json.dumps({"rank": rank, **c.row()}))
    best = run_config(ranked[0].layout, ranked[0].profile)
    print(json.dumps({"best": ranked[0].layout.describe(), "profile": ranked[0].profile.name, **best}))
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
    q.add_argument("--profile", required=True, action="append",
                   help="a profile JSON (tandem profile); repeat it, one per worker size (threads or "
                        "GPUs per worker), to search the size too (with --cores / --gpus)")
    q.add_argument("--workload", default="mooncake-conv",
                   help="a shipped trace (azure-code, azure-conv, mooncake-conv, mooncake-synth), a trace "
                        "file, or synthetic:<prompt>:<output>")
    q.add_argument("--requests", type=int, default=2000)
    q.add_argument("--max-model-len", type=int, default=None, help="clip trace lengths to this context")
    q.add_argument("--workers", type=int, help="workers to place")
    q.add_argument("--gpus", type=int, help="GPUs to place (a GPU profile's gpus_per_worker each)")
    q.add_argument("--cores", type=int, help="CPU cores to place (a CPU profile's threads_per_worker each)")
    q.add_argument("--ttft-ms", type=float, required=True)
    q.add_argument("--tpot-ms", type=float, required=True)
    q.add_argument("--rate", type=float, help="judge every layout at this rate (else: each one's max goodput)")
    q.add_argument("--fewest", action="store_true",
                   help="with --rate: the fewest workers (up to --workers / --gpus) meeting the objectives")
    q.add_argument("--attainment", type=float, default=0.9)
    q.add_argument("--host-cores", type=float, default=None,
                   help="the workers share one host of this many cores with the router (CPU "
                        "serving on one machine): costs stretched by each worker's share")
    q.add_argument("--max-splits", type=int, default=24, help="P:D splits tried on large fleets")
    q.add_argument("--top", type=int, default=10)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_plan)
