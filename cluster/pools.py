"""Worker pools as named Ray actors in placement groups, with restart policies."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from cluster.config import ClusterConfig, PoolConfig
from cluster.ray_runtime import POOL_RESOURCES
from engine.config import EngineConfig

logger = logging.getLogger(__name__)


def engine_config(cfg: ClusterConfig, num_threads: int | None = None) -> EngineConfig:
    """The ``model:`` section as a pool worker runs it: torch threads default to its CPUs."""
    return dataclasses.replace(cfg.model, num_threads=cfg.model.num_threads or num_threads)


# Ray starts worker processes at nice 15 (RayConfig worker_niceness) so its own daemons stay
# responsive. A pool worker's engine thread is the serving hot path: at nice 15 it loses the
# CPU to every nice-0 thread on the host (the router, the other workers' I/O threads, other
# tenants), and a decode step in the actor took 1.3x to 1.6x the bare engine's step on a busy
# 2-core host (benchmarks/actor_step.py, docs/disaggregation.md). Unprivileged: the worker
# simply never lowers its priority.
POOL_ACTOR_ENV = {"RAY_worker_niceness": "0"}


def pool_actor_options() -> dict[str, Any]:
    """Ray options every pool actor gets (besides placement and naming)."""
    return dict(max_task_retries=0, max_concurrency=1000,
                # No per-call task events: the GCS keeps each (~10 KB a call, several calls
                # a request) until 100k tasks, which read as a leak (Serve does the same for
                # its replicas).
                enable_task_events=False,
                runtime_env={"env_vars": dict(POOL_ACTOR_ENV)})


def _gpus(pool: PoolConfig) -> float:
    if pool.gpus_per_worker is not None:
        return pool.gpus_per_worker
    import ray
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


@dataclass(slots=True)
class WorkerPool:
    role: str
    names: list[str]
    handles: dict[str, Any]
    placement_group: Any = None
    incarnations: dict[str, str] = field(default_factory=dict)
    owned: bool = True              # this router stops it (False: attached, or ray.keep_pools)

    @classmethod
    def create(cls, role: str, cfg: ClusterConfig, pool_cfg: PoolConfig, ready_timeout_s: float = 180.0) -> "WorkerPool":
        """Create the pool, or attach to it when another router of this cluster already did."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        digest = pool_digest(role, cfg, pool_cfg)
        groups = _groups(cfg, f"tandem-{role}/")
        if any(_parse_group(g)[0] == digest for g in groups) or (not groups and _actors(role, cfg, pool_cfg)):
            logger.info("%s pool already exists in namespace %s: attaching", role, cfg.ray.namespace)
            return cls._await_other(role, cfg, pool_cfg, ready_timeout_s)
        if groups:      # pools of another config run: a newer generation replaces them
            theirs = max(_parse_group(g)[1] for g in groups)
            if cfg.ray.pools_generation <= theirs:
                raise _other_config(role, cfg, theirs)
            logger.warning("replacing the %s pool (generation %d, another config) with generation %d",
                           role, theirs, cfg.ray.pools_generation)
            _stop_role(role, cfg, groups)
        # On a shared cluster the pool must outlive the router that happened to create it.
        lifetime = "detached" if cfg.ray.address else None
        gpus = _gpus(pool_cfg)
        bundle = {"CPU": pool_cfg.cpus_per_worker, POOL_RESOURCES[role]: 1.0}
        if gpus:
            bundle["GPU"] = gpus
        # A placement group dies with the process that made it, and the actors in it with it:
        # a detached pool's group is detached too, or the pool dies with its creator.
        # The group's name is also the lock between routers that start at once (Helm's
        # replicas): Ray refuses a second group of that name, and its router waits for the
        # first one's actors and attaches.
        try:
            pg = placement_group([dict(bundle) for _ in range(pool_cfg.workers)], strategy="SPREAD",
                                 lifetime=lifetime, name=_group_name(cfg, role, digest))
            ray.get(pg.ready(), timeout=ready_timeout_s)
        except ray.exceptions.RaySystemError as exc:
            if "already exists" not in str(exc):
                raise
            logger.info("another router is creating the %s pool: waiting to attach", role)
            return cls._await_other(role, cfg, pool_cfg, ready_timeout_s)
        actor_cls = _actor_class(role, cfg)
        threads = max(1, int(pool_cfg.cpus_per_worker))
        names, handles = [], {}
        for i in range(pool_cfg.workers):
            name = f"tandem-{role}-{i}"
            opts = dict(name=name, namespace=cfg.ray.namespace, num_cpus=pool_cfg.cpus_per_worker,
                        lifetime=lifetime, get_if_exists=True,
                        num_gpus=gpus, resources={POOL_RESOURCES[role]: 1.0},
                        max_restarts=pool_cfg.max_restarts, **pool_actor_options(),
                        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i))
            args = _actor_args(role, name, cfg, threads)
            handles[name] = actor_cls.options(**opts).remote(*args)
            names.append(name)
        return cls(role, names, handles, pg, owned=not cfg.ray.keep_pools)

    @classmethod
    def _await_other(cls, role: str, cfg: ClusterConfig, pool_cfg: PoolConfig, timeout_s: float) -> "WorkerPool":
        """Attach to the pool another router made or is making (its actors may be on their way)."""
        import time
        deadline = time.monotonic() + timeout_s
        while (existing := _attach(role, cfg, pool_cfg)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"another router began the {role} pool and it has no actors after {timeout_s:.0f} s")
            time.sleep(0.5)
        return cls(role, list(existing[0]), existing[0], existing[1], owned=False)

    @classmethod
    def attach(cls, role: str, cfg: ClusterConfig, pool_cfg: PoolConfig) -> "WorkerPool":
        """The running pool another router created (``tandem router``); ValueError if there is
        none of that size in the namespace, or it runs another config. An attached pool is
        never stopped by this router."""
        existing = _attach(role, cfg, pool_cfg)
        if existing is None:
            raise ValueError(f"no running {role} pool of {pool_cfg.workers} worker(s) in Ray namespace "
                             f"{cfg.ray.namespace!r} at {cfg.ray.address}: start one with "
                             "`tandem serve --ray-address ...` (same pools and namespace)")
        return cls(role, list(existing[0]), existing[0], existing[1], owned=False)

    async def wait_ready(self, timeout_s: float = 300.0) -> None:
        refs = [self.handles[n].ping.remote() for n in self.names]
        incarnations = await asyncio.wait_for(asyncio.gather(*refs), timeout_s)
        self.incarnations = dict(zip(self.names, incarnations))
        logger.info("%s pool ready: %s", self.role, ", ".join(self.names))

    def shutdown(self) -> None:
        """Stop the pool's actors, unless this router only attached to them."""
        import ray
        from ray.util.placement_group import remove_placement_group

        if not self.owned:
            return
        for name in self.names:
            try:
                ray.kill(self.handles[name], no_restart=True)
            except Exception:   # already dead
                logger.debug("kill %s failed", name, exc_info=True)
        if self.placement_group is not None:
            remove_placement_group(self.placement_group)


def pool_digest(role: str, cfg: ClusterConfig, pool_cfg: PoolConfig) -> str:
    """What a pool's workers were built with (mode, engine, KV transfer, store, size), as a
    short digest: a router attaches only to a pool that runs its own config."""
    import hashlib
    import json
    threads = max(1, int(pool_cfg.cpus_per_worker))
    parts = {"role": role, "mode": cfg.mode, "model": dataclasses.asdict(engine_config(cfg, threads)),
             "kv_transfer": dataclasses.asdict(cfg.kv_transfer), "pool": dataclasses.asdict(pool_cfg),
             "store": dataclasses.asdict(cfg.store_for_workers())
             if (role == "prefill" or cfg.rebalance.enabled) and cfg.store_for_workers() else None,
             "switchable": cfg.rebalance.min_dwell_s if cfg.rebalance.enabled else None}
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


def _group_name(cfg: ClusterConfig, role: str, digest: str) -> str:
    return f"{cfg.ray.namespace}/tandem-{role}/{digest}/g{cfg.ray.pools_generation}"


def _parse_group(name: str) -> tuple[str, int]:
    """(config digest, generation) of a pool's placement group name."""
    parts = name.rsplit("/", 2)
    try:
        return parts[-2], int(parts[-1].lstrip("g"))
    except (IndexError, ValueError):
        return "", -1


def _groups(cfg: ClusterConfig, prefix: str = "tandem-") -> dict[str, str]:
    """Live placement groups of this namespace's pools: name -> id (hex)."""
    from ray.util.placement_group import placement_group_table
    start = f"{cfg.ray.namespace}/{prefix}"
    return {e["name"]: pid for pid, e in placement_group_table().items()
            if e.get("name", "").startswith(start) and e.get("state") != "REMOVED"}


def _other_config(role: str, cfg: ClusterConfig, generation: int) -> ValueError:
    return ValueError(f"the running {role} pool in Ray namespace {cfg.ray.namespace!r} was started with "
                      f"another config (model, engine, KV transfer, store or pool size differ; its "
                      f"ray.pools_generation is {generation}, this router's {cfg.ray.pools_generation}): serve "
                      f"with the config it runs, raise ray.pools_generation to replace it, or stop it first "
                      f"(`tandem stop-pools --ray-address {cfg.ray.address}`)")


def _actors(role: str, cfg: ClusterConfig, pool_cfg: PoolConfig) -> dict[str, Any] | None:
    import ray
    handles = {}
    for i in range(pool_cfg.workers):
        name = f"tandem-{role}-{i}"
        try:
            handles[name] = ray.get_actor(name, namespace=cfg.ray.namespace)
        except ValueError:
            return None
    return handles


def _attach(role: str, cfg: ClusterConfig, pool_cfg: PoolConfig) -> tuple[dict[str, Any], Any] | None:
    """(handles, placement group) of the running ``role`` pool of this config, or None; a
    ValueError when it runs another config (``pool_digest``)."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup
    groups = _groups(cfg, f"tandem-{role}/")
    digest = pool_digest(role, cfg, pool_cfg)
    mine = [pid for g, pid in groups.items() if _parse_group(g)[0] == digest]
    if groups and not mine:
        raise _other_config(role, cfg, max(_parse_group(g)[1] for g in groups))
    handles = _actors(role, cfg, pool_cfg)
    if handles is None:
        return None
    return handles, PlacementGroup(PlacementGroupID.from_hex(mine[0])) if mine else None


def _stop_role(role: str, cfg: ClusterConfig, groups: dict[str, str]) -> list[str]:
    """Kill the ``role`` pool's actors, remove its placement groups (``groups``), and wait
    until the actors' names are free again."""
    import time

    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    stopped, i = [], 0
    while True:
        name = f"tandem-{role}-{i}"
        try:
            handle = ray.get_actor(name, namespace=cfg.ray.namespace)
        except ValueError:
            break
        ray.kill(handle, no_restart=True)
        stopped.append(name)
        i += 1
    for group, pid in groups.items():
        remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pid)))
    deadline = time.monotonic() + 60
    for name in stopped:
        while time.monotonic() < deadline:
            try:
                ray.get_actor(name, namespace=cfg.ray.namespace)
            except ValueError:
                break
            time.sleep(0.2)
    return stopped + list(groups)


def stop_pools(cfg: ClusterConfig) -> list[str]:
    """Stop every pool of ``cfg.ray.namespace`` on the Ray cluster this process is connected
    to, whoever created them (``tandem stop-pools``): their actors and placement groups.
    Returns the names of what was stopped."""
    stopped: list[str] = []
    for role in ("prefill", "decode", "colocated"):
        stopped += _stop_role(role, cfg, _groups(cfg, f"tandem-{role}/"))
    return stopped


def _actor_class(role: str, cfg: ClusterConfig):
    import ray
    if cfg.rebalance.enabled and role in ("prefill", "decode"):
        from cluster.flex_worker import FlexWorker
        return ray.remote(FlexWorker)
    if role == "prefill":
        from prefill_worker.worker import PrefillWorker
        return ray.remote(PrefillWorker)
    from decode_worker.worker import DecodeWorker
    return ray.remote(DecodeWorker)


def _actor_args(role: str, name: str, cfg: ClusterConfig, threads: int) -> tuple:
    ecfg = engine_config(cfg, threads)
    if cfg.rebalance.enabled and role in ("prefill", "decode"):
        return (name, ecfg, cfg.kv_transfer, cfg.store_for_workers(), role, cfg.rebalance.min_dwell_s)
    if role == "prefill":
        return (name, ecfg, cfg.kv_transfer, cfg.store_for_workers())
    return (name, ecfg, cfg.kv_transfer, role)
