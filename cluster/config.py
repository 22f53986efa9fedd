"""The one typed cluster config: YAML file plus ``a.b.c=value`` overrides.

Each package owns its section (``model``: ``engine.config.EngineConfig``; ``kv_transfer``:
``kv_transfer.config``; ``store``: ``kv_transfer.store.config``; ``router`` and ``slo``:
``router.config``); this module owns the pools and Ray sections and composes the rest. The
defaults run ``make run`` on the embedded stories260K model. ``load_config`` rejects unknown
keys and bad values with a ``ConfigError`` that names the dotted path of the field, e.g.
``pools.prefill.workers: must be >= 1, got 0``. ``to_dict`` round-trips through YAML; the
Helm chart renders the same schema.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from engine.config import EngineConfig
from kv_transfer.config import KVTransferConfig
from kv_transfer.store.config import StoreConfig
from cluster.rebalance.config import RebalanceConfig
from router.config import (AdmissionConfig, AuthConfig, LimitsConfig, RouterConfig, SLOConfig,
                           TLSConfig)
from tandem_common.config import ConfigError, build, ge, gt, name, setting, validate

__all__ = ["AdmissionConfig", "AuthConfig", "ClusterConfig", "ConfigError", "EngineConfig",
           "KVTransferConfig", "LimitsConfig", "PoolConfig", "PoolsConfig", "RayConfig",
           "RebalanceConfig", "RouterConfig", "SLOConfig", "StoreConfig", "TLSConfig", "load_config"]


@dataclass(slots=True)
class PoolConfig:
    """One worker pool (prefill or decode): size and resources per worker."""
    workers: int = setting(1, ge(1))
    cpus_per_worker: float = setting(1.0, gt(0))
    gpus_per_worker: float | None = setting(None, ge(0))  # None: 1 where a GPU is present, else 0
    max_restarts: int = setting(3, ge(-1))                 # -1: restart forever


@dataclass(slots=True)
class PoolsConfig:
    prefill: PoolConfig = field(default_factory=PoolConfig)
    decode: PoolConfig = field(default_factory=PoolConfig)


@dataclass(slots=True)
class RayConfig:
    address: str | None = None       # None: start an embedded local Ray instance
    namespace: str = setting("tandem", name)
    include_dashboard: bool = False
    # True: no router stops the pools, not even the one that created them; they live as long
    # as the Ray cluster, or until `tandem stop-pools`. For several routers (the Helm chart).
    keep_pools: bool = False
    # Whose config wins when a router finds pools of another config running: one of a higher
    # generation replaces them, one of the same or a lower refuses to start (the chart sets
    # the Helm release revision, so an upgrade's routers replace the old pools).
    pools_generation: int = setting(0, ge(0))


@dataclass(slots=True)
class ClusterConfig:
    """Root of the Tandem config."""
    mode: Literal["disaggregated", "colocated"] = "disaggregated"
    model: EngineConfig = field(default_factory=EngineConfig)
    pools: PoolsConfig = field(default_factory=PoolsConfig)
    kv_transfer: KVTransferConfig = field(default_factory=KVTransferConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    rebalance: RebalanceConfig = field(default_factory=RebalanceConfig)

    def validate(self) -> None:
        """Check every field and the cross-field rules; raise ConfigError naming the path."""
        validate(self)
        if self.store.chunk_size % self.model.block_size:
            raise ConfigError("store.chunk_size", f"must be a multiple of model.block_size "
                              f"({self.model.block_size}), got {self.store.chunk_size}")
        if self.model.max_num_batched_tokens < self.model.block_size:
            raise ConfigError("model.max_num_batched_tokens",
                              f"must be >= model.block_size ({self.model.block_size})")
        self.router.check("router")
        self.rebalance.check("rebalance")
        if self.rebalance.enabled:
            if self.mode != "disaggregated":
                raise ConfigError("rebalance.enabled", "needs mode: disaggregated (a colocated worker "
                                  "already does both)")
            if self.pools.prefill.workers + self.pools.decode.workers < \
                    self.rebalance.min_prefill + self.rebalance.min_decode + 1:
                raise ConfigError("rebalance.enabled", "needs a worker to move: pools.prefill.workers + "
                                  "pools.decode.workers must exceed rebalance.min_prefill + min_decode")
            if self.pools.prefill.cpus_per_worker != self.pools.decode.cpus_per_worker or \
                    self.pools.prefill.gpus_per_worker != self.pools.decode.gpus_per_worker:
                raise ConfigError("rebalance.enabled", "needs both pools' workers alike (cpus_per_worker, "
                                  "gpus_per_worker): a worker serves either role")
        if self.ray.keep_pools and not self.ray.address:
            raise ConfigError("ray.keep_pools", "needs ray.address: an embedded Ray (and its pools) "
                              "stops with the router that started it")

    def require_choice(self, path: str, allowed: Iterable[str]) -> None:
        """Raise ConfigError unless the string at ``path`` is in ``allowed`` (a registry's names)."""
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part)
        names = sorted(allowed)
        if value not in names:
            raise ConfigError(path, f"unknown name {value!r}; known: {', '.join(names)}")

    def store_for_workers(self) -> StoreConfig | None:
        """The store settings a prefill worker opens (None: no store); values at rest are in
        the transfer codec unless ``store.codec`` names another."""
        if not self.store.enabled:
            return None
        if self.store.codec is not None:
            return dataclasses.replace(self.store)
        return dataclasses.replace(self.store, codec=self.kv_transfer.codec,
                                   entropy=self.kv_transfer.entropy)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-safe) that ``from_dict`` reads back to an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """Build and validate from a nested dict; raise ConfigError naming the path."""
        config = build(cls, data, "")
        config.validate()
        return config


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ClusterConfig:
    """Read the YAML file at ``path`` (defaults when None), apply ``a.b.c=value`` overrides.

    Override values are parsed as YAML scalars (``3``, ``0.5``, ``true``, ``null``, ``raw``).
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("", f"cannot read config file {path}: {exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("", f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("", f"{path} must hold a mapping at the top level")
        data = loaded or {}
    for item in overrides:
        _apply_override(data, item)
    return ClusterConfig.from_dict(data)


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
        raise ConfigError("", f"override {item!r} must look like 'a.b.c=value'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"cannot parse override value {raw!r}: {exc}") from exc
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[:i + 1]), "is not a section")
        node = child
    node[parts[-1]] = value
