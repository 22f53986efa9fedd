"""Messages of the prefix cache client: a fetch plan and a counters snapshot."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class FetchPlan:
    """What ``PrefixCacheClient.plan`` decided for one prompt, and why.

    ``decision``: "fetch" (get ``fetch_tokens`` from the store), "recompute" (a hit
    exists but computing it is cheaper), "miss" (nothing stored), "skip" (store not
    consulted: breaker open, prompt too short, or no hit could ever beat recompute).
    """
    token_ids: list[int]
    salt: bytes | str | None
    decision: str
    reason: str
    fetch_tokens: int = 0
    fetch_local_tokens: int = 0
    usable_tokens: int = 0        # longest prefix a hit may cover (leaves >= 1 to compute)
    hit_local: int = 0
    hit_remote: int = 0
    est_fetch_s: float = 0.0
    est_recompute_s: float = 0.0
    est_saving_s: float = 0.0
    prefill_tokens_per_s: float = 0.0
    lookup_s: float = 0.0
    inputs: dict[str, float] = field(default_factory=dict)

    def as_log_dict(self) -> dict[str, Any]:
        """Everything but the token ids, for logs and metrics."""
        out = asdict(self)
        out.pop("token_ids")
        out["salt"] = None if self.salt is None else "<set>"
        out["num_tokens"] = len(self.token_ids)
        return out


@dataclass(slots=True)
class StoreStats:
    """Counters of one prefix cache client (a snapshot; all monotonic but the state)."""
    plans: int = 0
    lookups: int = 0
    lookups_skipped: int = 0          # no possible hit could beat recompute
    breaker_skips: int = 0            # store bypassed because the breaker was open
    hits: int = 0                     # lookups that found at least one chunk
    hit_tokens_local: int = 0
    hit_tokens_remote: int = 0
    fetch_decisions: int = 0
    recompute_decisions: int = 0
    fetches: int = 0
    fetched_tokens: int = 0
    fetch_shortfalls: int = 0         # fetched less than planned (corrupt or evicted)
    fetch_failures: int = 0           # redis failed during a fetch
    lookup_failures: int = 0
    corrupt_entries: int = 0          # values that failed to decode/verify, deleted
    remote_errors: int = 0
    writebacks_queued: int = 0
    writebacks_done: int = 0
    writebacks_failed: int = 0
    writebacks_dropped: int = 0       # queue full (or store bypassed): not written
    remote_puts_dropped: int = 0      # chunk writes dropped by the remote write queue
    breaker_state: str = "closed"
    breaker_opens: int = 0
    cost: dict[str, dict[str, float]] = field(default_factory=dict)
    last_plan: dict[str, Any] = field(default_factory=dict)
