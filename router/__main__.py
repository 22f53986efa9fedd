"""Serve the router with the local (colocated, single-process) backend.

    python -m router [--config cluster.yaml] [-o router.grpc_port=50051 ...]

Prints ``listening on HOST:PORT`` once ready; stops on SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from cluster.config import ClusterConfig, ConfigError, load_config
from router.backends.local import LocalBackend
from router.server import RouterServer

logger = logging.getLogger(__name__)


async def serve_local(config: ClusterConfig) -> None:
    """Run a RouterServer over a LocalBackend until SIGINT/SIGTERM."""
    backend = LocalBackend(model_config=config.model, codecs=[config.kv_transfer.codec],
                           tenant_sharing=config.store.tenant_sharing)
    server = RouterServer(backend, config.router)
    port = await server.start()
    print(f"listening on {config.router.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tandem router over a local engine")
    parser.add_argument("--config", help="cluster config YAML")
    parser.add_argument("-o", "--override", action="append", default=[],
                        help="a.b.c=value override (repeatable)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.override)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve_local(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
