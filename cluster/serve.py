"""``tandem serve``: bring up Ray, Redis, both pools and the router; tear it all down on exit.

Everything this process starts it also stops: on Ctrl-C (or SIGTERM) the router stops
accepting, running streams get a grace period, then the pools, the embedded Ray and the
private redis-server go away. Nothing is left running.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from cluster.config import ClusterConfig
from cluster.pools import WorkerPool
from cluster.ray_runtime import pool_sizes, start_ray

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 45.0     # `tandem serve`'s whole stop: drain (5 s), pools, Ray


@dataclass(slots=True)
class Cluster:
    """A running Tandem cluster (pools + router) and what must be stopped with it."""
    cfg: ClusterConfig
    pools: dict[str, WorkerPool] = field(default_factory=dict)
    server: Any = None
    backend: Any = None
    redis: Any = None
    owns_ray: bool = False
    port: int | None = None
    attach_only: bool = False       # `tandem router`: serve pools another router created, never create them
    rebalancer: Any = None          # cluster.rebalance.controller.RebalanceController (rebalance.enabled)

    @property
    def target(self) -> str:
        return f"{self.cfg.router.host}:{self.port}"

    async def start(self) -> "Cluster":
        from kv_transfer.codecs import available_codecs
        from router.backends.ray_pools import RayPoolsBackend
        from router.server import RouterServer

        cfg = self.cfg
        check_choices(cfg)
        check_ports_free(cfg)
        try:
            if self.attach_only and not cfg.ray.address:
                raise ValueError("a router that attaches to running pools needs ray.address "
                                 "(--ray-address) of the cluster that runs them")
            if cfg.store.enabled and cfg.store.url is None and cfg.mode == "disaggregated" \
                    and not self.attach_only:     # the workers already have their store
                from kv_transfer.redis_server import RedisServer
                # Started from this (the main) thread so it dies with us even on SIGKILL;
                # supervised: restarted on the same port and password if it dies.
                self.redis = RedisServer(maxmemory=cfg.store.private_maxmemory).start().supervise()
                cfg.store.url = self.redis.url
            if threading.current_thread() is threading.main_thread():
                self.owns_ray = start_ray(cfg)   # Ray arms its SIGTERM handler only from here
            else:
                self.owns_ray = await asyncio.to_thread(start_ray, cfg)
            pool_cfgs = {"prefill": cfg.pools.prefill, "decode": cfg.pools.decode, "colocated": cfg.pools.decode}
            for role in pool_sizes(cfg):
                if self.attach_only:
                    self.pools[role] = await asyncio.to_thread(WorkerPool.attach, role, cfg, pool_cfgs[role])
                else:
                    self.pools[role] = await asyncio.to_thread(WorkerPool.create, role, cfg, pool_cfgs[role])
            await asyncio.gather(*(p.wait_ready() for p in self.pools.values()))
            self.backend = RayPoolsBackend(
                cfg.router, cfg.model, {r: p.handles for r, p in self.pools.items()}, available_codecs(),
                default_codec=cfg.kv_transfer.codec, colocated=cfg.mode == "colocated",
                tenant_sharing=cfg.store.tenant_sharing,
                early_decode=cfg.kv_transfer.transport == "ray", switchable=cfg.rebalance.enabled,
                tpot_ms=cfg.slo.tpot_ms)
            self.server = RouterServer(self.backend, cfg.router, slo=cfg.slo)
            self.port = await self.server.start()
            if cfg.rebalance.enabled:
                from cluster.rebalance.controller import RebalanceController
                from cluster.rebalance.lease import ray_lease
                gateway = self.server.gateway
                lease = await asyncio.to_thread(ray_lease, cfg.ray.namespace,
                                                bool(cfg.ray.address) or cfg.ray.keep_pools)
                self.rebalancer = RebalanceController(
                    self.backend.registry, cfg.rebalance, cfg.slo.ttft_ms, cfg.slo.tpot_ms,
                    router_queued_tokens=lambda: gateway.admission.queued_tokens,
                    metrics_registry=gateway.metrics.registry, lease=lease,
                    name=f"{socket.gethostname()}:{os.getpid()}:{self.port}")
                self.rebalancer.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self, grace_s: float = 5.0) -> None:
        if self.rebalancer is not None:
            await self.rebalancer.stop()
            self.rebalancer = None
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.stop(grace_s)
            self.server = None
        for pool in self.pools.values():
            with contextlib.suppress(Exception):
                pool.shutdown()
        self.pools.clear()
        if self.owns_ray:
            import ray
            with contextlib.suppress(Exception):
                await asyncio.to_thread(ray.shutdown)
            self.owns_ray = False
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def check_choices(cfg: ClusterConfig) -> None:
    """Names that registries resolve (policies, codecs, transports) fail before anything starts."""
    from kv_transfer.codecs import available_codecs
    from kv_transfer.transports import available_transports
    from router.policies import policy_names

    cfg.require_choice("router.prefill_policy", policy_names())
    cfg.require_choice("router.decode_policy", policy_names())
    cfg.require_choice("kv_transfer.codec", available_codecs())
    cfg.require_choice("kv_transfer.transport", available_transports())


def check_ports_free(cfg: ClusterConfig) -> None:
    """The router's fixed ports are free: fail in milliseconds, before Redis, Ray and the pools."""
    from cluster.config import ConfigError

    r = cfg.router
    for path, port in (("router.grpc_port", r.grpc_port), ("router.http_port", r.http_port),
                       ("router.metrics_port", r.metrics_port)):
        if not port:                    # None: off; 0: any free port
            continue
        with socket.socket(socket.AF_INET6 if ":" in r.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT is fine
            try:
                probe.bind((r.host, port))
            except OSError as exc:
                raise ConfigError(path, f"cannot listen on {r.host}:{port}: "
                                  f"{exc.strerror or exc}") from None


async def serve(cfg: ClusterConfig, attach_only: bool = False) -> int:
    from cluster.reaper import start_reaper

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signals() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    on_signals()
    reaper = start_reaper()       # stops what we start even if this process is SIGKILLed
    cluster = Cluster(cfg, attach_only=attach_only)
    stuck = False
    try:
        await cluster.start()
        on_signals()              # ray.init replaced the SIGTERM handler with its own
        await _serve_until(cluster, cfg, stop)
    finally:
        # A stop that does not end (a Ray call that never returns) must not keep the process:
        # past STOP_TIMEOUT_S it exits anyway and the reaper stops what is left.
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await cluster.stop()
        except TimeoutError:
            stuck = True
            logger.warning("stopping took over %.0f s; exiting anyway (what is left is stopped by the "
                           "reaper)", STOP_TIMEOUT_S)
        reaper.stdin.close()      # EOF: the reaper stops anything left, then exits
        await asyncio.to_thread(reaper.wait, 10)
    print("Tandem stopped.", flush=True)
    if stuck:                     # a thread still blocked in Ray would hold the interpreter's exit
        logging.shutdown()
        os._exit(0)
    return 0


async def _serve_until(cluster: Cluster, cfg: ClusterConfig, stop: asyncio.Event) -> None:
    extra = "".join(f", {name} on {cfg.router.host}:{port}" for name, port in (
        ("OpenAI HTTP", cluster.server.http_port), ("metrics", cluster.server.metrics_port))
        if port)
    print(f"Tandem ({cfg.mode}, model {cfg.model.model}) serving gRPC on {cluster.target}{extra}\n"
          f"  try:  tandem generate --target {cluster.target} \"Once upon a time\"\n"
          f"        tandem status --target {cluster.target}\n"
          "  Ctrl-C drains and stops everything.", flush=True)
    await stop.wait()
    logger.info("stopping: draining requests")
