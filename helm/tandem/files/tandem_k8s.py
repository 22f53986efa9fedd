"""Tandem's in-cluster helper: the router's launcher, its TLS health probe, the `helm test` client.

Mounted from the chart's ``<release>-scripts`` ConfigMap at /opt/tandem-k8s and run with the
image's Python:

``serve``     join the RayCluster as a CPU-less Ray node, wait until the worker groups
              advertise the pools' Ray resources (not with ``--no-wait-for-workers``: the
              Ray autoscaler adds pods on demand), add the Redis password (``REDIS_PASSWORD``)
              to the store URL, write the final config to a memory volume and exec
              ``tandem serve --ray-address auto`` on it.
``health``    one grpc.health.v1 check (exit 0 when SERVING), with TLS (and a client
              certificate, for a router that requires one) when asked.
``generate``  the health check, then one generation through the SDK (``helm test``).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit


class LaunchError(RuntimeError):
    """The router cannot be launched (no Ray head, missing workers, a bad config)."""


def with_password(url: str, password: str | None) -> str:
    """The Redis URL with ``password`` (percent-encoded) as its AUTH password."""
    if not password:
        return url
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "password"]
        # urlunsplit would drop the "//" of an empty host
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query + [('password', password)])}"
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise LaunchError(f"store.url must be redis://host[:port][/db] or rediss://..., got {url!r}")
    user = quote(parts.username, safe="") if parts.username else ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def required_resources(config: Any) -> dict[str, float]:
    """Ray custom resources the pools of ``config`` (a ClusterConfig) reserve, by name."""
    from cluster.ray_runtime import POOL_RESOURCES, pool_sizes

    needed: dict[str, float] = {}
    for role, workers in pool_sizes(config).items():
        name = POOL_RESOURCES[role]
        needed[name] = needed.get(name, 0.0) + workers
    return needed


def wait_for_resources(needed: Mapping[str, float], timeout_s: float,
                       cluster_resources: Callable[[], Mapping[str, float]],
                       poll_s: float = 2.0) -> None:
    """Return once ``cluster_resources()`` holds ``needed``; LaunchError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        have = cluster_resources()
        missing = {k: v for k, v in needed.items() if have.get(k, 0.0) < v}
        if not missing:
            return
        if time.monotonic() >= deadline:
            shown = ", ".join(f"{k}: {have.get(k, 0.0):g} of {v:g}" for k, v in sorted(missing.items()))
            raise LaunchError(f"worker groups did not come up within {timeout_s:g}s ({shown})")
        print(f"waiting for worker groups: {missing}", file=sys.stderr, flush=True)
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def write_config(config_in: Path, config_out: Path, password: str | None) -> Any:
    """Validate the chart's config, add the Redis password, write it (mode 0600); return it."""
    import yaml
    from cluster.config import ClusterConfig, load_config

    config = load_config(config_in)
    data = config.to_dict()
    if data["store"]["url"]:
        data["store"]["url"] = with_password(data["store"]["url"], password)
    config = ClusterConfig.from_dict(data)
    config_out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(config_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(data, out, sort_keys=False)
    return config


def start_ray_node(head: str, object_store_bytes: int, timeout_s: float) -> None:
    """Join the Ray cluster at ``head`` as a node with no CPUs or GPUs (a driver's home)."""
    cmd = ["ray", "start", f"--address={head}", "--num-cpus=0", "--num-gpus=0",
           f"--object-store-memory={object_store_bytes}", "--disable-usage-stats"]
    deadline = time.monotonic() + timeout_s
    while True:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise LaunchError(f"cannot join the Ray head at {head}: {result.stderr.strip()[-2000:]}")
        print(f"Ray head {head} not reachable yet; retrying", file=sys.stderr, flush=True)
        time.sleep(5)


def _serve(args: argparse.Namespace) -> int:
    start = time.monotonic()
    start_ray_node(args.ray_head, args.object_store_bytes, args.wait_timeout)
    config = write_config(Path(args.config), Path(args.out), os.environ.get("REDIS_PASSWORD"))
    import ray

    if not args.no_wait_for_workers:
        ray.init(address="auto", namespace=config.ray.namespace, log_to_driver=False)
        try:
            left = max(1.0, args.wait_timeout - (time.monotonic() - start))
            wait_for_resources(required_resources(config), left, ray.cluster_resources)
        finally:
            ray.shutdown()
    os.execvp("tandem", ["tandem", "serve", "--config", args.out, "--ray-address", "auto"])
    return 0  # not reached


def first_api_key(text: str) -> str | None:
    """The key of the first entry of an API keys file (router/auth.py's format: one entry a
    line or ','-separated, "<key>" or "<tenant>:<key> [rps=N ...]", '#' starts a comment)."""
    for entry in text.replace(",", "\n").splitlines():
        fields = entry.split("#", 1)[0].split()
        if fields:
            return fields[0].rpartition(":")[2] or None
    return None


def _credentials(args: argparse.Namespace) -> Any:
    """TLS channel credentials from --tls-ca (and --tls-cert/--tls-key for mTLS)."""
    import grpc

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    ca = Path(args.tls_ca)
    roots = ca.read_bytes() if ca.is_file() else None   # None: the system roots
    if args.tls_cert is None:
        return grpc.ssl_channel_credentials(roots)
    return grpc.ssl_channel_credentials(roots, Path(args.tls_key).read_bytes(),
                                        Path(args.tls_cert).read_bytes())


def _channel(args: argparse.Namespace) -> Any:
    import grpc

    if args.tls_ca is None:
        if args.tls_cert is not None or args.tls_key is not None:
            raise ValueError("--tls-cert and --tls-key need --tls-ca")
        return grpc.insecure_channel(args.target)
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.target, _credentials(args), options=options)


def check_health(args: argparse.Namespace) -> bool:
    """One grpc.health.v1 Check of ``args.service``; True when SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _channel(args) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"health check of {args.target} failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return False
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{args.target} {args.service or '(server)'}: "
          f"{health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
    return serving


def _health(args: argparse.Namespace) -> int:
    return 0 if check_health(args) else 1


def _generate(args: argparse.Namespace) -> int:
    from tandem_client import TandemClient

    if not check_health(args):
        return 1
    metadata = []
    if args.api_key_file:
        key = first_api_key(Path(args.api_key_file).read_text())
        if not key:
            print(f"no API key in {args.api_key_file}", file=sys.stderr)
            return 1
        metadata.append(("authorization", f"Bearer {key}"))
    credentials = options = None
    if args.tls_ca is not None:
        credentials = _credentials(args)
        options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else None
    from tandem_client.errors import TandemError

    try:
        with TandemClient(args.target, timeout=args.timeout, credentials=credentials,
                          metadata=metadata, options=options or ()) as client:
            result = client.generate(args.prompt, max_tokens=args.max_tokens, temperature=0.0)
    except TandemError as exc:
        print(f"generation through {args.target} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{args.prompt}{result.text}\n[{len(result.token_ids)} tokens, finish={result.finish_reason}]")
    return 0 if result.token_ids else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem_k8s", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="join Ray, wait for the pools, exec tandem serve")
    serve.add_argument("--config", required=True, help="the chart's config (no Redis password)")
    serve.add_argument("--out", required=True, help="where the final config is written")
    serve.add_argument("--ray-head", required=True, help="host:port of the Ray head's GCS")
    serve.add_argument("--object-store-bytes", type=int, default=256 << 20)
    serve.add_argument("--no-wait-for-workers", action="store_true",
                       help="start at once (the Ray autoscaler brings up the pods the pools ask for)")
    serve.add_argument("--wait-timeout", type=float, default=900.0,
                       help="seconds for the Ray head and the worker groups to come up")
    serve.set_defaults(func=_serve)
    for name, func in (("health", _health), ("generate", _generate)):
        p = sub.add_parser(name)
        p.add_argument("--target", required=True, help="host:port of the router")
        p.add_argument("--service", default="", help="health service name ('' = the server)")
        p.add_argument("--tls-ca", help="CA bundle; TLS when given (system roots if the file is absent)")
        p.add_argument("--server-name", help="TLS name to verify instead of the target's host")
        p.add_argument("--tls-cert", help="client certificate (PEM), for a router requiring mTLS")
        p.add_argument("--tls-key", help="the client certificate's private key (PEM)")
        p.add_argument("--timeout", type=float, default=60.0 if name == "generate" else 3.0)
        if name == "generate":
            p.add_argument("--prompt", default="Once upon a time")
            p.add_argument("--max-tokens", type=int, default=8)
            p.add_argument("--api-key-file", help="API keys file (router/auth.py format); the first key is sent")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LaunchError, ValueError, OSError) as exc:
        print(f"tandem_k8s {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
