"""Settings of the global KV store: one dataclass, validated on construction."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class StoreConfig:
    """How a worker reaches and uses the global prefix store.

    ``url=None`` starts a private redis-server on a free loopback port (the embedded
    default) that lives as long as the store. Sizes are bytes, times seconds.
    """
    backend: str = "lmcache"                 # store registry name: "lmcache" | "redis"
    url: str | None = None                   # redis://host:port[/db]; None = private server
    chunk_size: int = 256                    # tokens per stored chunk (full chunks only)
    local_cpu_bytes: int = 256 << 20         # DRAM tier (lmcache backend), committed at start
    codec: str = "raw"                       # kv_transfer codec for values at rest in Redis
    codec_params: dict[str, Any] | None = None
    entropy: str | None = None               # optional entropy stage of the wire format
    share_tenants: bool = False              # True: every tenant salt maps to one namespace
    key_prefix: str = "tandem"               # readable start of every Redis key
    op_timeout_s: float = 1.0                # a Redis call slower than this is a failure
    breaker_failures: int = 3                # consecutive failures that open the breaker
    breaker_reset_s: float = 2.0             # open time before a reconnect probe
    writeback_queue: int = 16                # pending write-back requests before dropping
    writeback_max_bytes: int = 512 << 20     # raw KV bytes pending write-back, at most
    calibrate: bool = True                   # measure bandwidths when the client starts
    private_maxmemory: str = "512mb"         # private server: maxmemory (LRU evicts beyond)
    private_policy: str = "allkeys-lru"
    instance_id: str = ""                    # free-form; shows up in logs
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.local_cpu_bytes < 0:
            raise ValueError(f"local_cpu_bytes must be >= 0, got {self.local_cpu_bytes}")
        if self.url is not None and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"url must be a redis:// URL or None, got {self.url!r}")
        for name in ("op_timeout_s", "breaker_reset_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("breaker_failures", "writeback_queue", "writeback_max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.codec:
            raise ValueError("codec must be a non-empty codec name")
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", self.key_prefix):
            raise ValueError(f"key_prefix must be 1-64 of [A-Za-z0-9_.:-], got {self.key_prefix!r}")
