"""Least-loaded: fewest requests queued or in flight; ties go to more free KV blocks."""
from __future__ import annotations

from router.policies.base import RoutingContext, RoutingPolicy, WorkerView, register_policy


@register_policy
class LeastLoaded(RoutingPolicy):
    name = "least_loaded"

    def pick(self, workers: list[WorkerView], ctx: RoutingContext) -> WorkerView:
        return self.least(workers, lambda w: w.load - w.free_kv_blocks / (w.total_kv_blocks + 1))
