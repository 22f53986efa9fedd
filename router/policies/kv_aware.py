"""Decode placement by free KV blocks and load.

A decode worker's capacity is its KV pool. Prefer the worker with the largest share of
free blocks after this request's blocks are taken, discounted by its in-flight count.
"""
from __future__ import annotations

from router.policies.base import RoutingContext, RoutingPolicy, WorkerView, register_policy


@register_policy
class KVAware(RoutingPolicy):
    name = "kv_aware"

    def pick(self, workers: list[WorkerView], ctx: RoutingContext) -> WorkerView:
        need = -(-ctx.num_prompt_tokens // max(ctx.block_size, 1))

        def cost(w: WorkerView) -> float:
            free_after = (w.free_kv_blocks - need) / max(w.total_kv_blocks, 1)
            return w.load - free_after
        return self.least(workers, cost)
