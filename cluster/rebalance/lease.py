"""One switch per cooldown across every router of a cluster.

Each router runs its own controller over its own view of the load. The cooldown each policy
keeps counts a switch another router made only once the switched worker's next load report
arrived, so two routers reading the same pressure in the same second could each switch a
worker: the pool the pressure asked for one more of would get two or three. ``SwitchLease``
closes that window: a controller claims the lease before it asks a worker to switch, and the
lease grants at most one claim per cooldown, whichever router asks. In a Ray cluster the lease
is a small named actor (``ray_lease``) that every router of the namespace finds by name; it
keeps the time of the last grant by its own clock, so routers' clocks need not agree.
"""
from __future__ import annotations

import logging
import time
from typing import Any

logger = logging.getLogger(__name__)

LEASE_NAME = "tandem-rebalance-lease"


class SwitchLease:
    """The last grant, and the rule: a claim is granted when ``cooldown_s`` passed since it."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._last: float | None = None
        self.holder: str | None = None       # who got the last grant

    def claim(self, holder: str, cooldown_s: float) -> bool:
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        now = self._clock()
        if self._last is not None and now - self._last < cooldown_s:
            return False
        self._last, self.holder = now, holder
        return True


def ray_lease(namespace: str, detached: bool) -> Any:
    """The namespace's lease actor, created by the first router that asks (``detached``: it
    outlives that router, for clusters whose pools do too)."""
    import ray
    actor = ray.remote(num_cpus=0, max_restarts=-1)(SwitchLease)
    opts: dict[str, Any] = dict(name=LEASE_NAME, namespace=namespace, get_if_exists=True)
    if detached:
        opts["lifetime"] = "detached"
    return actor.options(**opts).remote()
