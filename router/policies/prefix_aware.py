"""Prefix-aware prefill placement: longest locally cached prefix, against load.

Workers report the chain hashes of the blocks in their own prefix cache; the router also
records what it just sent where, so a burst of requests with one system prompt lands
together before the next report. A worker's hashes are tied to its incarnation: after a
restart they are dropped, never trusted (``RayPoolsBackend`` does that).
"""
from __future__ import annotations

from router.policies.base import RoutingContext, RoutingPolicy, WorkerView, register_policy


def cached_prefix_tokens(worker: WorkerView, ctx: RoutingContext) -> int:
    n = 0
    for h in ctx.block_hashes:
        if h not in worker.cached_hashes:
            break
        n += 1
    return n * ctx.block_size


@register_policy
class PrefixAware(RoutingPolicy):
    name = "prefix_aware"

    def __init__(self, load_slack: int = 2) -> None:
        # How many more requests in flight a worker may have and still win on its cache.
        self.load_slack = load_slack

    def pick(self, workers: list[WorkerView], ctx: RoutingContext) -> WorkerView:
        lightest = min(w.load for w in workers)
        eligible = [w for w in workers if w.load <= lightest + self.load_slack]
        best = max(cached_prefix_tokens(w, ctx) for w in eligible)
        if best == 0:
            return self.least(workers, lambda w: w.load)
        return self.least([w for w in eligible if cached_prefix_tokens(w, ctx) == best], lambda w: w.load)
