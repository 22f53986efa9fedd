"""``tandem serve``, ``tandem router``, ``tandem stop-pools``, ``tandem generate`` and ``tandem status``."""
from __future__ import annotations

import argparse
import asyncio
import sys

DEFAULT_HTTP_PORT = 8000


def _cmd_serve(args: argparse.Namespace) -> int:
    from cluster.config import load_config
    from cluster.serve import serve

    overrides = list(args.set or [])
    if args.ray_address:
        overrides.append(f"ray.address={args.ray_address}")
    if args.mode:
        overrides.append(f"mode={args.mode}")
    if args.port is not None:
        overrides.append(f"router.grpc_port={args.port}")
    if args.model:
        overrides.append(f"model.model={args.model}")
    cfg = load_config(args.config, overrides)
    if args.no_http:
        cfg.router.http_port = None
    elif args.http_port is not None:
        cfg.router.http_port = args.http_port
    elif cfg.router.http_port is None and not _mentions(args, "router.http_port"):
        cfg.router.http_port = DEFAULT_HTTP_PORT
    cfg.validate()
    return asyncio.run(serve(cfg, attach_only=args.command == "router"))


def _mentions(args: argparse.Namespace, key: str) -> bool:
    """Did the user set ``key`` (in --set or the config file)? Then their value stands."""
    if any(item.split("=", 1)[0].strip() == key for item in args.set or []):
        return True
    if args.config:
        from pathlib import Path
        return key.rsplit(".", 1)[-1] in Path(args.config).read_text()
    return False


def _cmd_generate(args: argparse.Namespace) -> int:
    from tandem_client import TandemClient

    client = TandemClient(args.target, timeout=args.timeout)
    try:
        stream = client.stream(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                               top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop=args.stop,
                               ignore_eos=args.ignore_eos, presence_penalty=args.presence_penalty,
                               frequency_penalty=args.frequency_penalty,
                               repetition_penalty=args.repetition_penalty, min_tokens=args.min_tokens,
                               logprobs=args.logprobs, tenant=args.tenant, codec=args.codec)
        with stream:
            sys.stdout.write(args.prompt)
            for delta in stream:
                sys.stdout.write(delta.text)
                sys.stdout.flush()
            res = stream.result
        u = res.usage
        print(f"\n[{u.completion_tokens} tokens, finish={res.finish_reason}, ttft={u.ttft_ms:.1f} ms, "
              f"cached prompt tokens={u.cached_prompt_tokens}/{u.prompt_tokens}, "
              f"prefill={u.prefill_worker or '-'}, decode={u.decode_worker or '-'}]")
        for tok, lp in zip(res.token_ids, res.logprobs or ()):
            alts = "  ".join(f"{t}:{v:.4f}" for t, v in lp.top)
            print(f"  token {tok:>6}  logprob {lp.logprob:.4f}" + (f"  top {alts}" if alts else ""))
    finally:
        client.close()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from tandem_client import TandemClient

    client = TandemClient(args.target, timeout=args.timeout)
    try:
        info = client.cluster_info()
        model = client.model_info()
    finally:
        client.close()
    print(f"model {model.model} ({model.dtype}), mode {info.mode}, healthy={info.healthy}")
    for pool in info.pools:
        print(f"pool {pool.name}:")
        for w in pool.workers:
            print(f"  {w.worker_id:<22} {w.health:<9} running={w.running_requests:<3} "
                  f"waiting={w.waiting_requests:<3} kv_free={w.free_kv_blocks}/{w.total_kv_blocks}"
                  f"  node={w.node[:12] or '-'}")
    return 0


def _cmd_stop_pools(args: argparse.Namespace) -> int:
    import ray

    from cluster.config import load_config
    from cluster.pools import stop_pools

    cfg = load_config(args.config, list(args.set or []) + [f"ray.address={args.ray_address}"])
    ray.init(address=args.ray_address, namespace=cfg.ray.namespace, log_to_driver=False)
    try:
        stopped = stop_pools(cfg)
    finally:
        ray.shutdown()
    print(f"stopped {', '.join(stopped)}" if stopped else f"no pools in Ray namespace {cfg.ray.namespace!r}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start a Tandem cluster (embedded Ray and Redis by default)")
    p.add_argument("--config", help="cluster config YAML (docs/config.md)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. pools.decode.workers=2")
    p.add_argument("--ray-address", help="join an existing Ray cluster instead of starting one")
    p.add_argument("--mode", choices=["disaggregated", "colocated"])
    p.add_argument("--model", help="model directory, 'stories260K' or a preset")
    p.add_argument("--port", type=int, help="gRPC port (default 50051)")
    p.add_argument("--http-port", type=int, help=f"OpenAI-compatible HTTP port (default {DEFAULT_HTTP_PORT}; 0: any free port)")
    p.add_argument("--no-http", action="store_true", help="serve gRPC only")
    p.set_defaults(func=_cmd_serve, command="serve")

    # Another router for pools `tandem serve` started: it serves from them and never stops them.
    r = sub.add_parser("router", help="serve from the pools a running `tandem serve` created (one more router)")
    r.add_argument("--ray-address", required=True, help="the Ray cluster that runs the pools")
    for flag, kw in (("--config", dict(help="the cluster config YAML the pools were started with")),
                     ("--set", dict(action="append", metavar="KEY=VALUE", help="override a config field")),
                     ("--mode", dict(choices=["disaggregated", "colocated"])), ("--model", {}),
                     ("--port", dict(type=int, help="gRPC port (default 50051)")),
                     ("--http-port", dict(type=int, help=f"HTTP port (default {DEFAULT_HTTP_PORT}; 0: any)"))):
        r.add_argument(flag, **kw)
    r.add_argument("--no-http", action="store_true", help="serve gRPC only")
    r.set_defaults(func=_cmd_serve, command="router")

    # The pools of a namespace, stopped whoever created them (with ray.keep_pools no router does).
    k = sub.add_parser("stop-pools", help="stop the worker pools of a Ray namespace (their actors and placement groups)")
    k.add_argument("--ray-address", required=True, help="the Ray cluster that runs the pools")
    k.add_argument("--config", help="the cluster config YAML (its ray.namespace)")
    k.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. ray.namespace=x")
    k.set_defaults(func=_cmd_stop_pools)

    for name, fn, help_ in (("generate", _cmd_generate, "stream a generation from a running server"),
                            ("status", _cmd_status, "show pools, workers and load")):
        q = sub.add_parser(name, help=help_)
        if name == "generate":
            q.add_argument("prompt")
            q.add_argument("--max-tokens", type=int, default=64)
            q.add_argument("--temperature", type=float, default=0.0)
            q.add_argument("--top-p", type=float)
            q.add_argument("--top-k", type=int)
            q.add_argument("--seed", type=int)
            q.add_argument("--stop", action="append", help="stop string (repeatable)")
            q.add_argument("--ignore-eos", action="store_true")
            q.add_argument("--presence-penalty", type=float)
            q.add_argument("--frequency-penalty", type=float)
            q.add_argument("--repetition-penalty", type=float)
            q.add_argument("--min-tokens", type=int)
            q.add_argument("--logprobs", type=int, metavar="K",
                           help="print each token's logprob and its K most likely alternatives")
            q.add_argument("--tenant")
            q.add_argument("--codec")
        q.add_argument("--target", default="127.0.0.1:50051")
        q.add_argument("--timeout", type=float, default=60.0)
        q.set_defaults(func=fn)
