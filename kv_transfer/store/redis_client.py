"""A redis-py client tuned for KV chunks: fast large values, bounded waits, no retries.

Measured here (shared/notes/tooling.md): hiredis parses large GET replies fast but its
command packer copies, so SET of MiB values drops to ~0.4 GB/s; the pure-Python packer
sends them as memoryviews at 2-3 GB/s. Every call has a socket timeout so a slow or dead
Redis costs at most ``timeout_s`` per call; retries are off because the circuit breaker
above decides when to try again, and redis-py reconnects on the next call by itself.
"""
from __future__ import annotations

import redis
from redis._parsers import Encoder
from redis.backoff import NoBackoff
from redis.connection import PythonRespSerializer
from redis.retry import Retry

_BUFFER_CUTOFF = 6000  # redis-py's default: larger arguments are sent without a copy

# What a dead, unreachable, slow or overloaded Redis raises through redis-py.
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError,
)


def make_client(url: str, timeout_s: float, max_connections: int = 8) -> redis.Redis:
    """A thread-safe client whose every call fails after ``timeout_s`` at most."""
    encoder = Encoder("utf-8", "strict", False)
    pool = redis.ConnectionPool.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0), max_connections=max_connections,
        command_packer=PythonRespSerializer(_BUFFER_CUTOFF, encoder.encode),
        health_check_interval=0)
    return redis.Redis(connection_pool=pool)


def close_client(client: redis.Redis) -> None:
    """Drop every pooled connection without waiting on the server."""
    try:
        client.connection_pool.disconnect()
    finally:
        client.close()
