"""When to move a worker between the prefill and decode pools: pure, on the workers' readings.

Each reading (``Reading``: what a worker's last load report says) feeds two pressures,
measured against the objectives the cluster serves to:

- **prefill**: the time a new prompt would wait for the prefill pool, the prompt tokens queued
  (at the workers, or in the router's admission queue, whichever is more) over the pool's
  measured prefill speed, divided by ``slo.ttft_ms``. Queue time, not service time: a burst
  shows up here before any request's TTFT is known (the signal NVIDIA Dynamo's planner was
  reported to miss, ai-dynamo/dynamo#10528);
- **decode**: the larger of the decode pool's slowest recent engine step over ``slo.tpot_ms``
  and, where sequences wait for KV blocks to join a worker's batch, that worker's KV use over
  ``rebalance.kv_high``. A full KV pool with nothing waiting is no pressure: long sequences
  fill it while decoding is not what holds the cluster back.

A switch is wanted when one pool's pressure is >= ``high`` while the other's is <= ``low``
(the gap between the two is the hysteresis), for ``sustain`` readings in a row, no sooner
than ``cooldown_s`` after the last switch (by this policy or, seen in the reports, another
router's), and only of a worker that has held its role ``min_dwell_s`` (the worker enforces
that too) while its pool keeps ``min_prefill``/``min_decode``. The worker that moves is the
least busy of its pool.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from cluster.rebalance.config import RebalanceConfig


@dataclass(slots=True)
class Reading:
    """One worker, from its last load report."""
    worker: str
    role: str                      # "prefill" or "decode"
    role_since: float = 0.0        # wall time it took that role
    queued_prompt_tokens: int = 0
    prefill_tokens_per_s: float = 0.0
    step_ms: float = 0.0           # mean engine step since its previous report
    running: int = 0
    kv_use: float = 0.0            # used / total KV blocks
    waiting: int = 0               # sequences waiting to join its batch (for KV blocks)


@dataclass(slots=True)
class Pressure:
    prefill: float
    decode: float
    prefill_queue_s: float
    decode_step_ms: float
    decode_kv_use: float


@dataclass(slots=True)
class Decision:
    worker: str
    from_role: str
    to_role: str
    pressure: Pressure
    reason: str
    at: float = 0.0                # wall time of the decision


@dataclass(slots=True)
class RebalancePolicy:
    cfg: RebalanceConfig
    ttft_ms: float
    tpot_ms: float
    started: float = 0.0           # wall time the policy began (switches before it are not "last")
    last_switch: float = float("-inf")
    last: Pressure | None = None   # the pressure at the last decide
    _want: str | None = None
    _streak: int = 0
    history: deque[Decision] = field(default_factory=lambda: deque(maxlen=256))   # the latest decisions

    def __post_init__(self) -> None:
        if self.ttft_ms <= 0 or self.tpot_ms <= 0:
            raise ValueError(f"objectives must be > 0 ms, got ttft {self.ttft_ms}, tpot {self.tpot_ms}")

    def pressure(self, readings: list[Reading], router_queued_tokens: int = 0) -> Pressure:
        prefill = [r for r in readings if r.role == "prefill"]
        decode = [r for r in readings if r.role == "decode"]
        speed = sum(r.prefill_tokens_per_s for r in prefill)
        queued = max(router_queued_tokens, sum(r.queued_prompt_tokens for r in prefill))
        queue_s = queued / speed if speed > 0 else 0.0
        step = max((r.step_ms for r in decode if r.running > 0), default=0.0)
        kv = max((r.kv_use for r in decode if r.waiting > 0), default=0.0)
        return Pressure(queue_s * 1000 / self.ttft_ms, max(step / self.tpot_ms, kv / self.cfg.kv_high),
                        queue_s, step, kv)

    def decide(self, readings: list[Reading], now: float, router_queued_tokens: int = 0) -> Decision | None:
        """The switch to make now, if any (its worker, roles and the inputs that chose it)."""
        cfg = self.cfg
        p = self.last = self.pressure(readings, router_queued_tokens)
        if p.prefill >= cfg.high and p.decode <= cfg.low:
            want, reason = "prefill", f"prefill pressure {p.prefill:.2f} >= {cfg.high}, decode {p.decode:.2f} <= {cfg.low}"
        elif p.decode >= cfg.high and p.prefill <= cfg.low:
            want, reason = "decode", f"decode pressure {p.decode:.2f} >= {cfg.high}, prefill {p.prefill:.2f} <= {cfg.low}"
        else:
            want, reason = None, ""
        self._streak = self._streak + 1 if want is not None and want == self._want else int(want is not None)
        self._want = want
        if want is None or self._streak < cfg.sustain:
            return None
        seen = max((r.role_since for r in readings if r.role_since > self.started), default=float("-inf"))
        if now - max(self.last_switch, seen) < cfg.cooldown_s:
            return None
        source = "decode" if want == "prefill" else "prefill"
        donors = [r for r in readings if r.role == source]
        floor = cfg.min_decode if source == "decode" else cfg.min_prefill
        if len(donors) <= floor:
            return None
        ready = [r for r in donors if now - r.role_since >= cfg.min_dwell_s]
        if not ready:
            return None
        key = (lambda r: (r.running, r.kv_use)) if source == "decode" else (lambda r: r.queued_prompt_tokens)
        worker = min(ready, key=key)
        self.last_switch, self._streak, self._want = now, 0, None
        decision = Decision(worker.worker, source, want, p, reason, now)
        self.history.append(decision)
        return decision
