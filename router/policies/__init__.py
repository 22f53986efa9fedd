"""Routing policies, registered by name on import."""
from router.policies import kv_aware, least_loaded, prefix_aware, round_robin  # noqa: F401
from router.policies.base import (RoutingContext, RoutingPolicy, WorkerView, create_policy,
                                  policy_names, register_policy)

__all__ = ["RoutingContext", "RoutingPolicy", "WorkerView", "create_policy", "policy_names",
           "register_policy"]
