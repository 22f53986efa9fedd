"""Rate sweeps: the highest offered rate whose runs meet the SLOs, by a grid or bisection.

A step *passes* when its SLO attainment reaches ``attainment_target`` and it is not
over-saturated. It is *over-saturated* when more than ``max_failure_fraction`` of its
requests failed, or its sustained rate (see ``metrics``) fell below ``min_throughput_ratio``
of the rate actually sent (its send rate; the nominal rate when too few were sent).
A grid stops ``patience`` steps after the first failing rate; bisection doubles from
``low`` until a step fails (or ``high`` passes), then halves the gap until it is within
``tolerance`` (relative) or ``max_steps`` runs were made.
"""
from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from loadtest.errors import SpecError


@dataclass(slots=True)
class SweepPolicy:
    mode: Literal["grid", "bisect"] = "grid"
    rates: list[float] = field(default_factory=list)       # grid
    low: float = 0.5                                       # bisect
    high: float = 64.0
    tolerance: float = 0.1
    max_steps: int = 10
    attainment_target: float = 0.9
    max_failure_fraction: float = 0.05
    min_throughput_ratio: float = 0.8
    patience: int = 0

    def __post_init__(self) -> None:
        if self.mode == "grid":
            if not self.rates or any(not (math.isfinite(r) and r > 0) for r in self.rates):
                raise SpecError("a grid sweep needs positive rates")
            self.rates = sorted(set(self.rates))
        elif self.mode == "bisect":
            if not 0 < self.low < self.high or not math.isfinite(self.high):
                raise SpecError(f"bisection needs 0 < low < high, got {self.low}, {self.high}")
            if self.tolerance <= 0:
                raise SpecError("tolerance must be > 0")
        else:
            raise SpecError(f"sweep mode must be 'grid' or 'bisect', got {self.mode!r}")
        if not 0 < self.attainment_target <= 1 or self.max_steps < 1 or self.patience < 0:
            raise SpecError("need 0 < attainment_target <= 1, max_steps >= 1, patience >= 0")
        if not 0 <= self.max_failure_fraction <= 1 or not 0 <= self.min_throughput_ratio <= 1:
            raise SpecError("max_failure_fraction and min_throughput_ratio must be in [0, 1]")


@dataclass(slots=True)
class StepResult:
    """One rate's run, reduced to what the sweep decides on."""
    rate: float
    figures: dict[str, Any]
    interrupted: bool = False
    saturation: list[str] = field(default_factory=list)
    passed: bool = False
    path: str = ""


def saturation_reasons(figures: dict[str, Any], rate: float, policy: SweepPolicy) -> list[str]:
    """Why a step at ``rate`` counts as over-saturated (empty: it does not)."""
    counts, throughput = figures["counts"], figures["throughput"]
    reasons = []
    total = counts["total"]
    if total and counts["failed"] / total > policy.max_failure_fraction:
        reasons.append(f"failures {counts['failed']}/{total} > "
                       f"{policy.max_failure_fraction:.0%}")
    sustained = throughput.get("sustained_rps") or 0.0
    offered = throughput.get("send_rate_rps") or rate
    if sustained < policy.min_throughput_ratio * offered:
        reasons.append(f"sustained {sustained:.3g} req/s < {policy.min_throughput_ratio:.0%} "
                       f"of the {offered:.3g} req/s sent")
    return reasons


def judge(rate: float, figures: dict[str, Any], policy: SweepPolicy,
          interrupted: bool = False, path: str = "") -> StepResult:
    step = StepResult(rate, figures, interrupted, saturation_reasons(figures, rate, policy),
                      path=path)
    step.passed = (not interrupted and not step.saturation
                   and figures["goodput"]["slo_attainment"] >= policy.attainment_target)
    return step


RunAt = Callable[[float], Awaitable[StepResult]]


async def run_sweep(policy: SweepPolicy, run_at: RunAt) -> dict[str, Any]:
    """Run steps via ``run_at(rate)`` (which returns a judged ``StepResult``) and return the
    sweep's outcome: steps, the highest passing rate and the goodput there."""
    steps: list[StepResult] = []

    async def step(rate: float) -> StepResult:
        result = await run_at(rate)
        steps.append(result)
        return result

    stop = "exhausted"
    if policy.mode == "grid":
        failures_seen = 0
        for rate in policy.rates[:policy.max_steps]:
            result = await step(rate)
            if result.interrupted:
                stop = "interrupted"
                break
            if not result.passed:
                failures_seen += 1
                if failures_seen > policy.patience:
                    stop = "saturated"
                    break
    else:
        stop = await _bisect(policy, step)
    return outcome(policy, steps, stop)


async def _bisect(policy: SweepPolicy, step: Callable[[float], Awaitable[StepResult]]) -> str:
    result = await step(policy.low)
    if result.interrupted:
        return "interrupted"
    if not result.passed:
        return "low_fails"
    best, fail, runs = policy.low, None, 1
    while runs < policy.max_steps and best < policy.high:
        rate = min(best * 2, policy.high)
        result, runs = await step(rate), runs + 1
        if result.interrupted:
            return "interrupted"
        if result.passed:
            best = rate
        else:
            fail = rate
            break
    if fail is None:
        return "high_passes" if best >= policy.high else "max_steps"
    while runs < policy.max_steps and (fail - best) / best > policy.tolerance:
        rate = (best + fail) / 2
        result, runs = await step(rate), runs + 1
        if result.interrupted:
            return "interrupted"
        if result.passed:
            best = rate
        else:
            fail = rate
    return "converged" if (fail - best) / best <= policy.tolerance else "max_steps"


def outcome(policy: SweepPolicy, steps: list[StepResult], stop: str) -> dict[str, Any]:
    """The sweep's summary from its steps."""
    passing = [s for s in steps if s.passed]
    failing = [s for s in steps if not s.passed and not s.interrupted]
    best = max(passing, key=lambda s: s.rate, default=None)
    goodputs = [s.figures["goodput"]["goodput_rps"] for s in steps]
    return {
        "policy": asdict(policy), "stop_reason": stop,
        "max_rate_meeting_slo": best.rate if best else None,
        "goodput_at_max_rate": best.figures["goodput"]["goodput_rps"] if best else None,
        "max_goodput_rps": max(goodputs, default=None),
        "first_failing_rate": min((s.rate for s in failing), default=None),
        "steps": [step_row(s) for s in steps],
    }


def step_row(s: StepResult) -> dict[str, Any]:
    f = s.figures
    lat = f["latency_ms"]
    return {"rate": s.rate, "passed": s.passed, "interrupted": s.interrupted,
            "saturation": s.saturation, "slo_attainment": f["goodput"]["slo_attainment"],
            "goodput_rps": f["goodput"]["goodput_rps"],
            "completed_rps": f["throughput"]["completed_rps"],
            "sustained_rps": f["throughput"].get("sustained_rps"),
            "send_rate_rps": f["throughput"].get("send_rate_rps"),
            "requests": f["counts"]["total"], "failed": f["counts"]["failed"],
            "ttft_p50_ms": lat["ttft"]["p50"], "ttft_p99_ms": lat["ttft"]["p99"],
            "tpot_p50_ms": lat["tpot"]["p50"], "tpot_p99_ms": lat["tpot"]["p99"],
            "result": s.path}
