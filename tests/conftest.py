"""Suite-wide settings and fixtures shared by every package's tests."""
from __future__ import annotations

import os

# Before anything imports lmcache or ray: no usage telemetry, no auth token files.
os.environ["LMCACHE_TRACK_USAGE"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("LMCACHE_LOG_LEVEL", "WARNING")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402

from kv_transfer.redis_server import RedisServer  # noqa: E402


def pytest_configure(config):
    # LMCache attaches a deprecated OpenTelemetry log handler to each of its ~100 loggers.
    config.addinivalue_line("filterwarnings",
                            "ignore:`LoggingHandler` in `opentelemetry-sdk`:DeprecationWarning")


@pytest.fixture(scope="session")
def redis_server():
    """A real private redis-server on a free loopback port for the whole session
    (no persistence, 256 MB, allkeys-lru). Tests that kill Redis start their own."""
    with RedisServer(maxmemory="256mb") as server:
        yield server


@pytest.fixture
def own_redis():
    """A redis-server for this test alone: tests kill, pause and restart it."""
    with RedisServer(maxmemory="128mb") as server:
        yield server


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session server's URL, emptied before each test."""
    import redis
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url
