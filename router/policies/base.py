"""Routing policies: one small interface, one file per policy, a registry by name.

A policy picks one worker for a request from the healthy candidates. It sees the router's
view of each worker (last load report plus what the router itself has in flight there)
and, for prefix-aware routing, the request's chunk hashes.
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class WorkerView:
    name: str
    handle: Any
    incarnation: str = ""
    healthy: bool = False
    inflight: int = 0                 # requests the router has sent and not seen finish
    queue_depth: int = 0
    running: int = 0
    free_kv_blocks: int = 0
    total_kv_blocks: int = 1
    cached_hashes: set[bytes] = field(default_factory=set)
    last_load: Any = None             # the worker's last WorkerLoad report

    @property
    def load(self) -> float:
        return self.inflight + self.queue_depth


@dataclass(slots=True)
class RoutingContext:
    request_id: str
    num_prompt_tokens: int
    block_hashes: list[bytes] = field(default_factory=list)   # chained, block-size chunks
    block_size: int = 16


class RoutingPolicy(abc.ABC):
    name: str = ""
    _turn: int = 0

    @abc.abstractmethod
    def pick(self, workers: list[WorkerView], ctx: RoutingContext) -> WorkerView:
        """Choose one of ``workers`` (non-empty, all healthy)."""

    def least(self, workers: list[WorkerView], key: Callable[[WorkerView], float]) -> WorkerView:
        """The worker with the smallest ``key``; ties take turns (by name order), so equally
        idle workers share a staggered stream of requests instead of the first taking all."""
        best = min(key(w) for w in workers)
        ties = sorted((w for w in workers if key(w) == best), key=lambda w: w.name)
        self._turn += 1
        return ties[self._turn % len(ties)]


_POLICIES: dict[str, type[RoutingPolicy]] = {}


def register_policy(cls: type[RoutingPolicy]) -> type[RoutingPolicy]:
    _POLICIES[cls.name] = cls
    return cls


def create_policy(name: str, **kwargs: Any) -> RoutingPolicy:
    if name not in _POLICIES:
        raise ValueError(f"unknown routing policy {name!r}; known: {', '.join(sorted(_POLICIES))}")
    return _POLICIES[name](**kwargs)


def policy_names() -> list[str]:
    return sorted(_POLICIES)
