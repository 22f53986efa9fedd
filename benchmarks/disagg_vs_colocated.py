"""Disaggregated vs colocated serving: goodput at SLO on the same workload (SKELETON).

Planned shape (not implemented yet; the entry point is ``_main`` so ``python -m benchmarks``
does not run it until it is):

    .venv/bin/python -m benchmarks.disagg_vs_colocated [--quick]

1. Start a colocated deployment (``mode=colocated``) and measure it with the load-test
   harness: ``loadtest.bench_sweep.run_rate_sweep`` over the same workloads as below.
2. Start the disaggregated cluster (``cluster.testing.BackgroundCluster``, same model, same
   total CPU share) and run the identical sweeps (same seeds, same SLOs).
3. Workloads: a synthetic mix with long prompts (prefill-heavy, where disaggregation should
   protect TPOT), a Mooncake replay (``--block-tokens`` = engine block size, prefix reuse),
   and a multi-turn conversation workload.
4. Print one JSON line per figure: max rate meeting the SLOs, goodput there, p50/p99 TTFT
   and TPOT at a common rate, each for both modes and as a ratio disaggregated/colocated
   (medians of repeated sweeps; the machine is noisy).
"""
from __future__ import annotations

from dataclasses import dataclass

from loadtest.metrics import SLO
from loadtest.spec import Workload
from loadtest.sweep import SweepPolicy


@dataclass(slots=True)
class Scenario:
    """One workload to sweep in both modes."""
    name: str
    workload: Workload
    policy: SweepPolicy
    slo: SLO


def scenarios(quick: bool) -> list[Scenario]:
    """The workloads of the comparison (see the module doc)."""
    raise NotImplementedError("disagg_vs_colocated is a skeleton; see the module doc")


def measure(mode: str, scenario: Scenario) -> dict[str, object]:
    """Start a deployment in ``mode`` and return its sweep outcome for ``scenario``."""
    raise NotImplementedError("disagg_vs_colocated is a skeleton; see the module doc")


def _main() -> None:
    """Renamed to ``main`` once implemented, so the benchmarks runner picks it up."""
    raise NotImplementedError("disagg_vs_colocated is a skeleton; see the module doc")


if __name__ == "__main__":
    _main()
