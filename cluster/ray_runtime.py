"""Ray bootstrap: an embedded local instance by default, or join an existing cluster."""
from __future__ import annotations

import logging
import os

from cluster.config import ClusterConfig

logger = logging.getLogger(__name__)

# Custom Ray resources that name each pool. The Helm chart's worker groups declare the
# same names, so pool actors land only on their own group's nodes.
POOL_RESOURCES = {"prefill": "tandem_prefill", "decode": "tandem_decode", "colocated": "tandem_decode"}

_QUIET_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
              "LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1"}


def pool_sizes(cfg: ClusterConfig) -> dict[str, int]:
    if cfg.mode == "colocated":
        return {"colocated": cfg.pools.decode.workers}
    return {"prefill": cfg.pools.prefill.workers, "decode": cfg.pools.decode.workers}


def start_ray(cfg: ClusterConfig) -> bool:
    """Connect to Ray; returns True when this process started (and so must stop) it."""
    import ray

    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return False
    env = {"env_vars": {k: os.environ[k] for k in _QUIET_ENV}}
    if cfg.ray.address:
        logger.info("joining Ray cluster at %s", cfg.ray.address)
        ray.init(address=cfg.ray.address, namespace=cfg.ray.namespace, runtime_env=env,
                 log_to_driver=False)
        return False
    resources: dict[str, float] = {}
    for role, n in pool_sizes(cfg).items():
        resources[POOL_RESOURCES[role]] = resources.get(POOL_RESOURCES[role], 0) + n
    cpus = max(os.cpu_count() or 1, _cpus_needed(cfg))
    logger.info("starting an embedded local Ray (%d CPUs, resources %s)", cpus, resources)
    for attempt in (1, 2):
        try:
            ray.init(num_cpus=cpus, resources=resources, namespace=cfg.ray.namespace,
                     include_dashboard=cfg.ray.include_dashboard, runtime_env=env,
                     log_to_driver=False, configure_logging=False)
            return True
        except Exception as exc:
            # Ray gives its raylet a fixed 30 s to register; a host loaded enough to miss
            # that once is worth one more try, not a failed start.
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
            logger.warning("the embedded Ray did not start in time (%s); retrying once", exc)
            ray.shutdown()
    return True


def _cpus_needed(cfg: ClusterConfig) -> int:
    if cfg.mode == "colocated":
        return int(-(-cfg.pools.decode.workers * cfg.pools.decode.cpus_per_worker // 1))
    need = cfg.pools.prefill.workers * cfg.pools.prefill.cpus_per_worker + \
        cfg.pools.decode.workers * cfg.pools.decode.cpus_per_worker
    return int(-(-need // 1))
