"""Round-robin: each request to the next worker in name order."""
from __future__ import annotations

import itertools

from router.policies.base import RoutingContext, RoutingPolicy, WorkerView, register_policy


@register_policy
class RoundRobin(RoutingPolicy):
    name = "round_robin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, workers: list[WorkerView], ctx: RoutingContext) -> WorkerView:
        ordered = sorted(workers, key=lambda w: w.name)
        return ordered[next(self._counter) % len(ordered)]
