"""The load report every worker sends the router (prefill, decode and colocated alike)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class WorkerLoad:
    worker_id: str
    incarnation: str                      # changes when the actor restarts
    role: str
    queue_depth: int
    running: int
    free_kv_blocks: int
    total_kv_blocks: int
    tokens_per_s: float
    prefill_tokens_per_s: float
    healthy: bool = True
    # The prefix-cache index as a delta (engine.load.CachedHashFeed): drop ``hashes_removed``
    # and add ``hashes_added`` to the set held at version ``hashes_base`` to get the set at
    # ``hashes_version``; base 0: ``hashes_added`` is the whole set.
    hashes_base: int = 0
    hashes_version: int = 0
    hashes_added: list[bytes] = field(default_factory=list)
    hashes_removed: list[bytes] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)
    node: str = ""                        # the Ray node the worker runs on (``current_node``)
    queued_prompt_tokens: int = 0         # prompt tokens waiting for or in prefill here
    step_ms: float = 0.0                  # mean engine step since the previous report (0: none ran)
    role_since: float = 0.0               # wall time the worker took its role (a switchable worker)


def current_node() -> str:
    """The id of the Ray node this process runs on; "" outside a Ray worker."""
    try:
        import ray
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:      # no Ray, or no runtime context: not placed on a node
        return ""
