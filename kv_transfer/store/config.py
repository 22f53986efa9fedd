"""Settings of the global KV store (the ``store:`` config section): one dataclass, validated
on construction, read by the workers' store clients and composed by ``cluster.config``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tandem_common.config import byte_size, ge, gt, matches, name, redis_url, setting, validate


@dataclass(slots=True)
class StoreConfig:
    """How a worker reaches and uses the global prefix store.

    ``url=None`` starts a private redis-server on a free loopback port that lives as long as
    the store (``tandem serve`` starts one for the whole cluster instead). Sizes are bytes,
    times seconds.
    """
    enabled: bool = True                     # False: no global store (each worker's own cache only)
    backend: str = setting("lmcache", name)  # store registry name: "lmcache" | "redis"
    url: str | None = setting(None, redis_url)   # redis://host:port[/db]; None: a private server
    chunk_size: int = setting(256, ge(1))    # tokens per stored chunk (full chunks only)
    local_cpu_bytes: int = setting(256 << 20, ge(0))   # LMCache's DRAM tier, committed at start
    codec: str | None = setting(None, name)  # codec of values at rest; None: kv_transfer's codec
    entropy: Literal["zstd", "lz4"] | None = None   # with ``codec`` set: its entropy stage
    tenant_sharing: bool = False             # True: every tenant salt maps to one namespace
    key_prefix: str = setting("tandem", matches(r"[A-Za-z0-9_.:-]{1,64}", "1-64 of [A-Za-z0-9_.:-]"))
    op_timeout_s: float = setting(1.0, gt(0))          # a Redis call slower than this fails
    breaker_failures: int = setting(3, ge(1))          # consecutive failures that open the breaker
    breaker_reset_s: float = setting(2.0, gt(0))       # open time before a reconnect probe
    writeback_queue: int = setting(16, ge(1))          # pending write-backs before dropping
    writeback_max_bytes: int = setting(512 << 20, ge(1))   # raw KV bytes pending write-back
    calibrate: bool = True                   # measure the tiers' bandwidths when a client starts
    private_maxmemory: str = setting("512mb", byte_size)   # the private server's LRU bound
    private_policy: str = setting("allkeys-lru", name)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def value_codec(self) -> str:
        """The codec stored values are encoded with ("raw" unless one was chosen)."""
        return self.codec or "raw"
