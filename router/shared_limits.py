"""Per-tenant rate and concurrency limits shared by every router of a cluster, in Redis.

With several routers (``router.limits.shared_url`` set), a tenant's limits hold for the
cluster, not per router: the token bucket and the set of in-flight leases live in Redis and
one Lua script checks and takes both atomically (on Redis's own clock, so the routers' clocks
do not matter). A lease is a member of the tenant's sorted set, scored with its expiry: a
router that dies mid-request leaks no slot for longer than ``lease_ttl_s`` (the router's
request timeout and a margin: no request runs longer). A lease is named by its request id, so
a stream that resumes through another router after its own died (``GenerateRequest.resume``)
takes over its lease while it lives: neither counted twice nor charged a second rate token.
Refusals are the same
``AdmissionRejected`` as the per-router ``TenantLimiter``'s, with the same reasons and
retry-after hints.

If Redis cannot be reached the limiter fails open (the request is served, a warning logged
once a minute): limits protect the cluster from a tenant, and a Redis outage must not turn
into a full outage.
"""
from __future__ import annotations

import logging
import time
import uuid

from router.admission import AdmissionRejected
from router.auth import TenantLimits
from router.config import LimitsConfig
from router.ratelimit import TenantLease, TenantLimiter

logger = logging.getLogger(__name__)

_CONCURRENCY_RETRY_S = 0.25
_BUCKET_TTL_S = 600
_WARN_EVERY_S = 60.0

# KEYS: bucket hash, leases zset. ARGV: rps (-1: none), burst, cap (-1: none), lease id, lease ttl s,
# resumed ("1": a resumed stream; its live lease, if any, is taken over).
# Returns {0, active} (over the cap), {1, wait_s as a string} (over the rate), {2} (taken).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rps, burst, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
if cap >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if ARGV[6] == '1' and redis.call('ZSCORE', KEYS[2], ARGV[4]) then
    redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
    return {2}
  end
  local active = redis.call('ZCARD', KEYS[2])
  if active >= cap then return {0, active} end
end
if rps >= 0 then
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
  local tokens = tonumber(b[1]) or burst
  local updated = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rps)
  if tokens < 1 then return {1, tostring((1 - tokens) / rps)} end
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'updated', tostring(now))
  redis.call('EXPIRE', KEYS[1], %d)
end
if cap >= 0 then
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
  redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 1)
end
return {2}
""" % _BUCKET_TTL_S


class SharedTenantLimiter(TenantLimiter):
    """``TenantLimiter`` whose state is in Redis (``url``), shared by every router."""

    def __init__(self, cfg: LimitsConfig, url: str, lease_ttl_s: float, prefix: str = "tandem:limits") -> None:
        super().__init__(cfg)
        import redis.asyncio as aioredis
        self._redis = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self.lease_ttl_s, self.prefix = lease_ttl_s, prefix
        self._warned = 0.0

    async def acquire_async(self, tenant: str, overrides: TenantLimits = TenantLimits(), *,
                            request_id: str = "", resumed: bool = False) -> TenantLease:
        rps, burst, cap = self.limits_for(overrides)
        if rps is None and cap is None:
            return TenantLease(None, tenant)
        lease_id = request_id or uuid.uuid4().hex
        keys = [f"{self.prefix}:{tenant}:bucket", f"{self.prefix}:{tenant}:leases"]
        try:
            verdict = await self._acquire(keys=keys, args=[
                -1 if rps is None else rps, burst, -1 if cap is None else cap, lease_id, self.lease_ttl_s,
                "1" if resumed else "0"])
        except Exception as exc:          # Redis down or slow: fail open (module docstring)
            self._warn(exc)
            return TenantLease(None, tenant)
        kind = int(verdict[0])
        if kind == 0:
            raise AdmissionRejected("tenant_concurrency", f"tenant {tenant!r} has {int(verdict[1])} "
                                    f"requests in flight, its limit is {cap}", _CONCURRENCY_RETRY_S)
        if kind == 1:
            raise AdmissionRejected("tenant_rate", f"tenant {tenant!r} is over its rate of {rps:g} "
                                    "requests/s", float(verdict[1]))
        return _SharedLease(None, tenant, self, keys[1], lease_id) if cap is not None else TenantLease(None, tenant)

    async def release_lease(self, leases_key: str, lease_id: str) -> None:
        try:
            await self._redis.zrem(leases_key, lease_id)
        except Exception as exc:          # the lease expires by itself
            self._warn(exc)

    async def close(self) -> None:
        await self._redis.aclose()

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > _WARN_EVERY_S:
            self._warned = now
            logger.warning("shared tenant limits unavailable (%s: %s); serving without them",
                           type(exc).__name__, exc)


class _SharedLease(TenantLease):
    """A concurrency slot in Redis; ``release()`` gives it back in the background."""
    __slots__ = ("shared", "key", "lease_id")

    def __init__(self, limiter, tenant: str, shared: SharedTenantLimiter, key: str, lease_id: str) -> None:
        super().__init__(limiter, tenant)
        self.shared, self.key, self.lease_id = shared, key, lease_id

    def release(self) -> None:
        if self.shared is None:
            return
        shared, self.shared = self.shared, None
        import asyncio
        task = asyncio.get_running_loop().create_task(shared.release_lease(self.key, self.lease_id))
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)


_PENDING: set = set()
