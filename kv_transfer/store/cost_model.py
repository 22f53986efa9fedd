"""Fetch or recompute: the store's cost controller (CacheGen's idea).

Each tier's fetch time is modelled as ``fixed_s + raw_bytes / bytes_per_s`` (decode
included for Redis), both measured: a two-point probe when the client starts, then an
exponential moving average over real fetches. Recompute time is the hit length over the
caller's measured prefill speed. ``choose`` takes the cheapest of: recompute everything,
fetch the DRAM part only, fetch the whole hit; a fetch has to beat recompute by the safety
margin, so a wrong estimate costs little and a warm request is never slower than cold.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from kv_transfer.store.base import FetchSample, TierHits

TIERS = ("local", "remote")


@dataclass(slots=True)
class TierCost:
    """Measured cost of fetching from one tier."""
    fixed_s: float
    bytes_per_s: float
    samples: int = 0
    present: bool = True      # False: the store has no such tier

    def seconds(self, raw_bytes: int) -> float:
        return 0.0 if raw_bytes <= 0 else self.fixed_s + raw_bytes / self.bytes_per_s


@dataclass(slots=True, frozen=True)
class Choice:
    """The controller's answer and every input it used (logged and exported)."""
    fetch_tokens: int
    fetch_local_tokens: int
    est_fetch_s: float
    est_recompute_s: float       # recompute of the tokens the choice fetches
    est_saving_s: float          # recompute-all cost minus the chosen cost
    local_fixed_s: float
    local_bytes_per_s: float
    remote_fixed_s: float
    remote_bytes_per_s: float
    prefill_tokens_per_s: float


class CostModel:
    """Measured per-tier fetch costs and the fetch-vs-recompute decision."""

    def __init__(self, bytes_per_token: int, safety: float = 1.25, alpha: float = 0.3) -> None:
        if bytes_per_token < 1:
            raise ValueError(f"bytes_per_token must be >= 1, got {bytes_per_token}")
        if safety < 1.0:
            raise ValueError(f"safety must be >= 1, got {safety}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.bytes_per_token = bytes_per_token
        self.safety = safety
        self.alpha = alpha
        # Pessimistic until measured: no fetch is chosen on priors alone for small hits.
        self.tiers = {"local": TierCost(fixed_s=2e-3, bytes_per_s=1e9),
                      "remote": TierCost(fixed_s=5e-3, bytes_per_s=1e8)}
        self._lock = threading.Lock()

    def calibrate(self, tier: str, small: FetchSample, large: FetchSample) -> None:
        """Fit fixed cost and bandwidth from two probes of different sizes."""
        self._check_tier(tier)
        extra_bytes = large.raw_bytes - small.raw_bytes
        extra_s = large.seconds - small.seconds
        with self._lock:
            cost = self.tiers[tier]
            if extra_bytes > 0 and extra_s > 0:
                cost.bytes_per_s = extra_bytes / extra_s
                cost.fixed_s = max(0.0, small.seconds - small.raw_bytes / cost.bytes_per_s)
            else:  # noise swallowed the difference: charge it all as bandwidth
                cost.bytes_per_s = max(large.raw_bytes, 1) / max(large.seconds, 1e-6)
                cost.fixed_s = 0.0
            cost.samples += 2

    def observe(self, tier: str, sample: FetchSample) -> None:
        """Fold one real fetch into the tier's bandwidth estimate."""
        self._check_tier(tier)
        if sample.raw_bytes <= 0 or sample.seconds <= 0:
            return
        with self._lock:
            cost = self.tiers[tier]
            transfer_s = max(sample.seconds - cost.fixed_s, 0.1 * sample.seconds)
            # Average seconds per byte, not bytes per second: one slow fetch moves the
            # estimate a lot (towards recompute), one fast fetch only a little.
            spb = 1.0 / cost.bytes_per_s
            spb += self.alpha * (transfer_s / sample.raw_bytes - spb)
            cost.bytes_per_s = 1.0 / spb
            cost.samples += 1

    def estimate(self, local_tokens: int, remote_tokens: int) -> float:
        """Seconds to fetch ``local_tokens`` from DRAM then ``remote_tokens`` from Redis."""
        with self._lock:
            return (self.tiers["local"].seconds(local_tokens * self.bytes_per_token)
                    + self.tiers["remote"].seconds(remote_tokens * self.bytes_per_token))

    def best_case_wins(self, max_tokens: int, prefill_tokens_per_s: float) -> bool:
        """Could any hit of up to ``max_tokens`` beat recompute? If not, skip the lookup."""
        if max_tokens <= 0:
            return False
        recompute = max_tokens / prefill_tokens_per_s
        with self._lock:
            present = [name for name, cost in self.tiers.items() if cost.present]
        best = min((self.estimate(max_tokens, 0) if name == "local" else self.estimate(0, max_tokens))
                   for name in present) if present else float("inf")
        return best * self.safety < recompute

    def mark_absent(self, tier: str) -> None:
        """The store has no such tier: never count on it when deciding to look up."""
        self._check_tier(tier)
        with self._lock:
            self.tiers[tier].present = False

    def choose(self, hits: TierHits, usable: int, prefill_tokens_per_s: float) -> Choice:
        """The cheapest way to obtain the first ``usable`` hit tokens."""
        if prefill_tokens_per_s <= 0:
            raise ValueError(f"prefill_tokens_per_s must be > 0, got {prefill_tokens_per_s}")
        local = min(hits.local, usable)
        total = min(hits.total, usable)
        best_tokens, best_local, best_fetch_s, best_cost = 0, 0, 0.0, total / prefill_tokens_per_s
        for fetch_local, fetch_total in ((local, local), (local, total)):
            if fetch_total <= 0:
                continue
            fetch_s = self.estimate(fetch_local, fetch_total - fetch_local)
            cost = fetch_s * self.safety + (total - fetch_total) / prefill_tokens_per_s
            if cost < best_cost:
                best_tokens, best_local, best_fetch_s, best_cost = \
                    fetch_total, fetch_local, fetch_s, cost
        with self._lock:
            loc, rem = self.tiers["local"], self.tiers["remote"]
            return Choice(best_tokens, best_local, best_fetch_s,
                          best_tokens / prefill_tokens_per_s,
                          total / prefill_tokens_per_s - best_cost,
                          loc.fixed_s, loc.bytes_per_s, rem.fixed_s, rem.bytes_per_s,
                          prefill_tokens_per_s)

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {name: {"fixed_s": c.fixed_s, "bytes_per_s": c.bytes_per_s,
                           "samples": c.samples} for name, c in self.tiers.items() if c.present}

    @staticmethod
    def _check_tier(tier: str) -> None:
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
