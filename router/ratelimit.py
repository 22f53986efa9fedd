"""Per-tenant request rate (token bucket) and concurrency caps.

Defaults come from ``router.limits`` (``tenant_rps``, ``tenant_burst``,
``tenant_max_concurrency``); a key's line in the keys file may override them for its
tenant (``rps=``, ``burst=``, ``concurrency=``). A refusal is an ``AdmissionRejected`` with
a retry-after hint: when the bucket will hold a token again, or a short pause for a
concurrency slot. State per tenant is a few numbers; idle tenants are forgotten.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from router.config import LimitsConfig
from router.admission import AdmissionRejected
from router.auth import TenantLimits

_CONCURRENCY_RETRY_S = 0.25
_FORGET_AFTER_S = 600.0


@dataclass(slots=True)
class _TenantState:
    tokens: float
    updated: float
    active: int = 0


@dataclass(slots=True)
class TenantLease:
    """Held while a request runs; ``release()`` gives the concurrency slot back (idempotent)."""
    limiter: TenantLimiter | None
    tenant: str

    def release(self) -> None:
        if self.limiter is not None:
            self.limiter._release(self.tenant)
            self.limiter = None


class TenantLimiter:
    """Token bucket + in-flight cap per tenant; ``acquire`` refuses with a retry-after."""

    def __init__(self, cfg: LimitsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._default = TenantLimits(cfg.tenant_rps, cfg.tenant_burst, cfg.tenant_max_concurrency)
        self._clock = clock
        self._state: dict[str, _TenantState] = {}
        self._last_sweep = clock()

    def active(self, tenant: str) -> int:
        state = self._state.get(tenant)
        return 0 if state is None else state.active

    def limits_for(self, overrides: TenantLimits) -> tuple[float | None, int, int | None]:
        """(requests/s, burst, concurrency cap) for a tenant: its key's overrides, else the defaults."""
        rps = overrides.rps or self._default.rps
        burst = overrides.burst or self._default.burst or max(1, int(rps or 1))
        return rps, burst, overrides.concurrency or self._default.concurrency

    async def acquire_async(self, tenant: str, overrides: TenantLimits = TenantLimits(), *,
                            request_id: str = "", resumed: bool = False) -> TenantLease:
        """``acquire`` as the gateway calls it (a shared limiter asks Redis, where a resumed
        request takes over its own lease; here a resume is counted like any request: the
        router it left is gone, and its slots with it)."""
        return self.acquire(tenant, overrides)

    def acquire(self, tenant: str, overrides: TenantLimits = TenantLimits()) -> TenantLease:
        """Take one request slot for ``tenant`` or raise AdmissionRejected."""
        rps, burst, cap = self.limits_for(overrides)
        if rps is None and cap is None:
            return TenantLease(None, tenant)
        now = self._clock()
        self._sweep(now)
        state = self._state.get(tenant)
        if state is None:
            state = self._state[tenant] = _TenantState(float(burst), now)
        if cap is not None and state.active >= cap:
            raise AdmissionRejected("tenant_concurrency", f"tenant {tenant!r} has {state.active} "
                                    f"requests in flight, its limit is {cap}", _CONCURRENCY_RETRY_S)
        if rps is not None:
            state.tokens = min(float(burst), state.tokens + (now - state.updated) * rps)
            state.updated = now
            if state.tokens < 1.0:
                raise AdmissionRejected("tenant_rate", f"tenant {tenant!r} is over its rate of "
                                        f"{rps:g} requests/s", (1.0 - state.tokens) / rps)
            state.tokens -= 1.0
        state.active += 1
        return TenantLease(self, tenant)

    async def close(self) -> None:
        """Nothing to release here (a shared limiter closes its Redis connections)."""

    def _release(self, tenant: str) -> None:
        state = self._state.get(tenant)
        if state is not None and state.active > 0:
            state.active -= 1

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _FORGET_AFTER_S:
            return
        self._last_sweep = now
        for tenant in [t for t, s in self._state.items()
                       if s.active == 0 and now - s.updated > _FORGET_AFTER_S]:
            del self._state[tenant]
