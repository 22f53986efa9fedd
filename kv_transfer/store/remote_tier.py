"""The Redis tier: chunk keys -> wire blobs, with corruption handling and counters.

Shared by the LMCache remote connector and the native "redis" backend, so both read and
write the same entries the same way. Failures of Redis itself raise ``StoreUnavailable``
(after counting them); a value that fails to decode or verify is deleted, counted and
ends the usable prefix there.
"""
from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis
import torch

from kv_transfer.store.base import FetchSample, StoreUnavailable
from kv_transfer.store.redis_client import REDIS_FAILURES, close_client, make_client
from kv_transfer.store.values import CorruptEntry, ValueCodec

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class TierCounters:
    """Monotonic counters of one Redis tier (read them under ``RedisChunkTier.lock``)."""
    errors: int = 0            # Redis failures (down, timeout, refused), reads and writes
    write_errors: int = 0      # the part of ``errors`` met while writing
    corrupt: int = 0           # values that failed to decode/verify, deleted
    rejected_puts: int = 0     # SETs Redis refused (e.g. OOM under a noeviction policy)
    chunks_put: int = 0
    chunks_got: int = 0
    bytes_put: int = 0         # wire bytes written
    bytes_got: int = 0         # wire bytes read
    raw_bytes_put: int = 0     # KV bytes those chunks decode to
    get_seconds: float = 0.0   # time in GET + decode
    raw_bytes_timed: int = 0   # KV bytes covered by get_seconds


class RedisChunkTier:
    """Reads and writes KV chunks as wire blobs under ``KeyScheme`` keys."""

    def __init__(self, url: str, values: ValueCodec, chunk_size: int, timeout_s: float) -> None:
        self.url = url
        self.safe_url = redact_url(url)   # what logs may show: never the password
        self.values = values
        self.chunk_size = chunk_size
        self.client = make_client(url, timeout_s)
        self.counters = TierCounters()
        self.lock = threading.Lock()

    def _failed(self, op: str, exc: BaseException, write: bool = False) -> StoreUnavailable:
        with self.lock:
            self.counters.errors += 1
            self.counters.write_errors += write
        logger.warning("redis %s failed at %s: %s", op, self.safe_url, exc)
        return StoreUnavailable(f"redis {op} failed: {exc}")

    def _exists(self, keys: Sequence[str], write: bool = False) -> list[bool]:
        """Whether each key exists, in one pipelined round trip."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            return pipe.execute()
        except REDIS_FAILURES as exc:
            raise self._failed("EXISTS", exc, write=write) from exc

    def count_prefix(self, keys: Sequence[str]) -> int:
        """How many of ``keys``, from the first, exist."""
        if not keys:
            return 0
        found = self._exists(keys)
        hits = 0
        for present in found:
            if not present:
                break
            hits += 1
        return hits

    def fetch(self, keys: Sequence[str]) -> list[torch.Tensor]:
        """Decoded chunks for the longest usable prefix of ``keys`` (may be empty)."""
        if not keys:
            return []
        started = time.perf_counter()
        try:
            blobs = self.client.mget(list(keys))
        except REDIS_FAILURES as exc:
            raise self._failed("MGET", exc) from exc
        chunks: list[torch.Tensor] = []
        wire_bytes = 0
        for key, blob in zip(keys, blobs, strict=True):
            if blob is None:
                break
            try:
                chunks.append(self.values.decode(blob, self.chunk_size))
            except CorruptEntry as exc:
                self._drop_corrupt(key, exc)
                break
            wire_bytes += len(blob)
        elapsed = time.perf_counter() - started
        raw = sum(c.numel() * c.element_size() for c in chunks)
        with self.lock:
            self.counters.chunks_got += len(chunks)
            self.counters.bytes_got += wire_bytes
            if chunks:
                self.counters.get_seconds += elapsed
                self.counters.raw_bytes_timed += raw
        return chunks

    def _drop_corrupt(self, key: str, exc: CorruptEntry) -> None:
        with self.lock:
            self.counters.corrupt += 1
        logger.warning("corrupt store entry %s deleted, will recompute: %s", key, exc)
        try:
            self.client.delete(key)
        except REDIS_FAILURES as del_exc:  # still a miss; the breaker hears of it
            raise self._failed("DEL", del_exc) from del_exc

    def store(self, keys: Sequence[str], chunks: Sequence[torch.Tensor]) -> int:
        """Write the chunks not stored yet; returns how many were written."""
        if len(keys) != len(chunks):
            raise ValueError(f"{len(keys)} keys for {len(chunks)} chunks")
        if not keys:
            return 0
        present = self._exists(keys, write=True)
        todo = [(k, c) for k, c, p in zip(keys, chunks, present, strict=True) if not p]
        if not todo:
            return 0
        blobs = [self.values.encode(chunk) for _, chunk in todo]
        try:
            pipe = self.client.pipeline(transaction=False)
            for (key, _), blob in zip(todo, blobs, strict=True):
                pipe.set(key, blob)
            results = pipe.execute(raise_on_error=False)
        except REDIS_FAILURES as exc:
            raise self._failed("SET", exc, write=True) from exc
        written = 0
        with self.lock:
            for (_, chunk), blob, result in zip(todo, blobs, results, strict=True):
                if isinstance(result, redis.ResponseError):
                    self.counters.rejected_puts += 1
                    continue
                written += 1
                self.counters.chunks_put += 1
                self.counters.bytes_put += len(blob)
                self.counters.raw_bytes_put += chunk.numel() * chunk.element_size()
        if written < len(todo):
            logger.warning("redis refused %d of %d chunk writes (maxmemory policy?)",
                           len(todo) - written, len(todo))
        return written

    def measure_fetch(self, num_chunks: int) -> FetchSample:
        """Time MGET + decode of ``num_chunks`` synthetic chunks under throw-away keys."""
        lay = self.values.layout
        chunk = torch.randn(lay.num_layers, 2, self.chunk_size, lay.num_kv_heads,
                            lay.head_dim).to(self.values.dtype)
        blob = self.values.encode(chunk)
        keys = [f"tandem.probe.{uuid.uuid4().hex}" for _ in range(max(1, num_chunks))]
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.set(key, blob, ex=60)  # expires even if the DEL below never runs
            pipe.execute()
            started = time.perf_counter()
            for got in self.client.mget(keys):
                if got is None:
                    raise StoreUnavailable("probe key vanished (evicted?)")
                self.values.decode(got, self.chunk_size)
            elapsed = time.perf_counter() - started
            self.client.delete(*keys)
        except REDIS_FAILURES as exc:
            raise self._failed("probe", exc) from exc
        return FetchSample(len(keys) * chunk.numel() * chunk.element_size(), elapsed)

    def check_eviction_policy(self) -> str | None:
        """Warn if Redis would refuse writes when full instead of evicting (best effort:
        managed Redis services often forbid CONFIG)."""
        try:
            policy = self.client.config_get("maxmemory-policy").get("maxmemory-policy")
        except (redis.RedisError, OSError):
            return None
        policy = policy.decode() if isinstance(policy, bytes) else policy
        if policy == "noeviction":
            logger.warning("redis at %s has maxmemory-policy noeviction: a full store will "
                           "refuse writes (counted, not raised); use allkeys-lru", self.safe_url)
        return policy

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except REDIS_FAILURES:
            return False

    def snapshot(self) -> TierCounters:
        with self.lock:
            return TierCounters(**{f: getattr(self.counters, f)
                                   for f in TierCounters.__dataclass_fields__})

    def close(self) -> None:
        close_client(self.client)


def redact_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host`` (also a bare ``:secret@``)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


class TierBackedStore:
    """Health and counters of a store whose remote tier is ``self.tier`` (a RedisChunkTier).

    Mixed in before ``KVStore`` by every store built on the tier, so they report alike."""

    tier: "RedisChunkTier"
    _closed: bool

    def ping(self) -> bool:
        return not self._closed and self.tier.ping()

    def corrupt_entries(self) -> int:
        return self.tier.snapshot().corrupt

    def remote_errors(self) -> int:
        return self.tier.snapshot().errors

    def write_errors(self) -> int:
        return self.tier.snapshot().write_errors
