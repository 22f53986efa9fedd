"""Run statistics: percentiles, SLO attainment and goodput, from request records.

Definitions (stated in every report):
- Latency percentiles are over successful (``ok``) requests; ITL over every gap of them.
- TPOT of a request = (e2e - ttft) / (completion_tokens - 1); a request with one output
  token has no TPOT and meets any TPOT objective.
- A request is *good* when it is ``ok`` and meets every given objective (TTFT, TPOT and,
  if set, end-to-end latency).
- SLO attainment = good / all requests, failed, refused, timed-out and cancelled included.
- Goodput = good requests per second of run duration (t0 to the end of the last request).
- Sustained rate = ok requests / (last end - first send - median ok e2e): the rate the
  server kept up with, without the drain tail that a short run's duration includes (for a
  server that keeps up it is close to the offered rate; for an overloaded one it falls).
- Send rate = (requests - 1) / (last send - first send): the rate actually offered, which
  for a short replay of a trace can differ from the trace's mean rate.
- Offered rate = the workload's configured request rate (open loop; none for a closed loop).
  A multi-turn workload's arrivals start conversations: it offers ``offered_users_per_s``,
  and its request rate is the send rate.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loadtest.errors import SpecError
from loadtest.record import RequestRecord

PERCENTILES = (50, 90, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default "linear" method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """count, mean, min, p50/p90/p95/p99, max of the non-None values (None when empty)."""
    data = [float(v) for v in values if v is not None]
    out: dict[str, float | int | None] = {"count": len(data)}
    keys = ["mean", "min", *(f"p{p}" for p in PERCENTILES), "max"]
    if not data:
        return out | {k: None for k in keys}
    out["mean"] = sum(data) / len(data)
    out["min"] = min(data)
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(data, p)
    out["max"] = max(data)
    return out


@dataclass(slots=True)
class SLO:
    """Service-level objectives in milliseconds (``e2e_ms`` optional)."""
    ttft_ms: float = 1000.0
    tpot_ms: float = 100.0
    e2e_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise SpecError(f"SLO {name} must be a positive number, got {value!r}")

    def ttft_met(self, r: RequestRecord) -> bool:
        return r.ok and r.ttft_ms is not None and r.ttft_ms <= self.ttft_ms

    def tpot_met(self, r: RequestRecord) -> bool:
        tpot = r.tpot_ms
        return r.ok and (tpot is None or tpot <= self.tpot_ms)

    def met(self, r: RequestRecord) -> bool:
        """Whether ``r`` is good: ok and within every objective."""
        e2e_ok = self.e2e_ms is None or (r.e2e_ms is not None and r.e2e_ms <= self.e2e_ms)
        return self.ttft_met(r) and self.tpot_met(r) and e2e_ok


def summarize(records: Sequence[RequestRecord], duration_s: float, slo: SLO,
              offered_rps: float | None = None,
              offered_users_per_s: float | None = None) -> dict[str, Any]:
    """Every figure of a run's report (see the module doc for definitions)."""
    total = len(records)
    ok = [r for r in records if r.ok]
    good = sum(1 for r in records if slo.met(r))
    per_s = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: 0.0)
    prompt = sum(r.prompt_tokens or r.sent_prompt_tokens for r in ok)
    cached = sum(r.cached_prompt_tokens for r in ok)
    completion = sum(r.completion_tokens for r in ok)
    sustained = send_rate = None
    sends = sorted(r.send_s for r in records)
    if len(sends) >= 2 and sends[-1] > sends[0]:
        send_rate = (len(sends) - 1) / (sends[-1] - sends[0])
    ends = [r.end_s for r in records if r.end_s is not None]
    if ok and ends:
        window = (max(ends) - min(r.send_s for r in records)
                  - percentile([r.e2e_ms or 0.0 for r in ok], 50) / 1000.0)
        sustained = len(ok) / window if window > 0 else None
    return {
        "counts": {"total": total, "ok": len(ok), "failed": total - len(ok),
                   "by_status": dict(sorted(Counter(r.status.value for r in records).items()))},
        "latency_ms": {
            "ttft": distribution(r.ttft_ms for r in ok),
            "tpot": distribution(r.tpot_ms for r in ok),
            "itl": distribution(gap for r in ok for gap in r.itl_ms),
            "e2e": distribution(r.e2e_ms for r in ok),
        },
        "throughput": {"duration_s": duration_s, "offered_rps": offered_rps,
                       "offered_users_per_s": offered_users_per_s,
                       "send_rate_rps": send_rate,
                       "sent_rps": per_s(total), "completed_rps": per_s(len(ok)),
                       "sustained_rps": sustained,
                       "input_tokens_per_s": per_s(prompt),
                       "output_tokens_per_s": per_s(completion)},
        "goodput": {"slo": asdict(slo), "good_requests": good, "goodput_rps": per_s(good),
                    "slo_attainment": good / total if total else 0.0,
                    "ttft_attainment": (sum(1 for r in records if slo.ttft_met(r)) / total
                                        if total else 0.0),
                    "tpot_attainment": (sum(1 for r in records if slo.tpot_met(r)) / total
                                        if total else 0.0)},
        "tokens": {"prompt": prompt, "cached_prompt": cached, "completion": completion,
                   "prefix_hit_rate": cached / prompt if prompt else 0.0},
        "workers": {"prefill": dict(Counter(r.prefill_worker for r in ok if r.prefill_worker)),
                    "decode": dict(Counter(r.decode_worker for r in ok if r.decode_worker))},
    }
