"""``tandem plan``: search layouts on a profile and a workload, rank them by what the
simulator predicts, and say how to run the best.

For a fixed number of workers (``--workers``, or ``--gpus`` / the profile's GPUs per
worker) the candidates are colocated with a few chunk budgets and every disaggregated P:D
split (a spread of them on large fleets). With ``--rate`` each is simulated once at that
rate and ranked by attainment of both objectives (then by the p99 figures); without it, by
max goodput (the highest rate at which ``attainment`` of the requests meet both, found by
bisection). ``--fewest`` (with ``--rate``) instead finds the fewest workers that meet the
objectives at that rate (``fewest``), up to ``--workers``.

Threads (or GPUs) per worker are searched too when several profiles are given, one per
worker size (``tandem profile --threads N`` each): for a fixed number of cores (``--cores``)
or GPUs, each profile places as many workers as fit, and every profile's candidates are
ranked together (``plan_resources``); ``--fewest`` then finds the fewest cores or GPUs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from cluster.planner.profile import Profile
from cluster.planner.simulator import Layout, Workload, max_goodput, simulate

CHUNKS = (256, 512, 1024, 2048)


@dataclass(slots=True)
class Candidate:
    layout: Layout
    attainment: float | None = None
    goodput_rps: float | None = None
    figures: dict | None = None
    profile: Profile | None = None      # the worker size it was simulated with

    def row(self) -> dict:
        size = {} if self.profile is None else {
            "profile": self.profile.name, "threads_per_worker": self.profile.threads_per_worker,
            "gpus_per_worker": self.profile.gpus_per_worker}
        return {"layout": self.layout.describe(), **asdict(self.layout), **size, "attainment": self.attainment,
                "goodput_rps": self.goodput_rps, **(self.figures or {})}


def candidates(workers: int, max_splits: int = 24) -> list[Layout]:
    """Colocated with each chunk budget, and disaggregated P+D splits of ``workers``."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = [Layout("colocated", 0, workers, c) for c in CHUNKS]
    if workers >= 2:
        if workers - 1 <= max_splits:
            splits = range(1, workers)
        else:   # log-spaced prefill shares, both ends included
            splits = sorted({max(1, min(workers - 1, round(workers * f)))
                             for f in (math.exp(math.log(1 / workers) + i * (math.log((workers - 1) / workers)
                                                                             - math.log(1 / workers)) / (max_splits - 1))
                                       for i in range(max_splits))})
        out += [Layout("disaggregated", p, workers - p) for p in splits]
    return out


def plan(profile: Profile, workload: Workload, workers: int, ttft_ms: float, tpot_ms: float,
         rate: float | None = None, attainment: float = 0.9, max_splits: int = 24,
         host_cores: float | None = None) -> list[Candidate]:
    """Every candidate layout with its prediction, best first (``host_cores``: the workers
    share one host of that many cores, ``simulate``'s shared-core model)."""
    if rate is not None:
        workload = workload.with_rate(rate)
    ranked = []
    for layout in candidates(workers, max_splits):
        c = Candidate(layout, profile=profile)
        if rate is not None:
            res = simulate(profile, layout, workload, host_cores=host_cores)
            c.attainment, c.figures = res.attainment(ttft_ms, tpot_ms), res.summary()
        else:
            c.goodput_rps = max_goodput(profile, layout, workload, ttft_ms, tpot_ms, attainment,
                                        host_cores=host_cores)
        ranked.append(c)
    return _rank(ranked, rate is not None)


def _rank(ranked: list[Candidate], at_rate: bool) -> list[Candidate]:
    if at_rate:
        ranked.sort(key=lambda c: (-c.attainment, c.figures["ttft_p99_ms"] + c.figures["tpot_p99_ms"]))
    else:
        ranked.sort(key=lambda c: -c.goodput_rps)
    return ranked


def unit(profile: Profile) -> tuple[str, int]:
    """What a worker of ``profile`` takes: ("gpus", n) or ("cores", threads)."""
    if profile.gpus_per_worker:
        return "gpus", profile.gpus_per_worker
    return "cores", max(1, profile.threads_per_worker)


def workers_for(profile: Profile, resources: int) -> int:
    """Workers of ``profile`` that ``resources`` cores (or GPUs, for a GPU profile) hold."""
    return resources // unit(profile)[1]


def plan_resources(profiles: list[Profile], workload: Workload, resources: int, ttft_ms: float,
                   tpot_ms: float, rate: float | None = None, attainment: float = 0.9,
                   max_splits: int = 24, host_cores: float | None = None) -> list[Candidate]:
    """``plan`` for each worker size (profile) on ``resources`` cores or GPUs, ranked together.
    Profiles must all be CPU or all GPU; a size that fits no worker is skipped (ValueError
    if none fits)."""
    if not profiles:
        raise ValueError("give at least one profile")
    kinds = {unit(p)[0] for p in profiles}
    if len(kinds) > 1:
        raise ValueError("profiles mix CPU and GPU workers: plan them separately")
    ranked: list[Candidate] = []
    for prof in profiles:
        n = workers_for(prof, resources)
        if n >= 1:
            ranked += plan(prof, workload, n, ttft_ms, tpot_ms, rate, attainment, max_splits, host_cores)
    if not ranked:
        raise ValueError(f"{resources} {kinds.pop()} fit no worker of any profile")
    return _rank(ranked, rate is not None)

def fewest(profile: Profile, workload: Workload, rate: float, ttft_ms: float, tpot_ms: float,
           attainment: float = 0.9, max_workers: int = 1024, max_splits: int = 24) -> tuple[int, list[Candidate]]:
    """The fewest workers whose best layout serves ``workload`` at ``rate`` with ``attainment``
    of the requests within both objectives, and that count's ranking (bisection over the
    count: a layout with more workers does no worse). ValueError when ``max_workers`` do not."""
    def best(n: int) -> list[Candidate]:
        return plan(profile, workload, n, ttft_ms, tpot_ms, rate=rate, max_splits=max_splits)

    top = best(max_workers)
    if top[0].attainment < attainment:
        raise ValueError(f"even {max_workers} workers meet the objectives for only "
                         f"{top[0].attainment:.0%} of the requests at {rate:g} req/s")
    lo, hi, ranked = 0, max_workers, top          # lo fails (or is 0), hi meets
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = best(mid)
        if r[0].attainment >= attainment:
            hi, ranked = mid, r
        else:
            lo = mid
    return hi, ranked


def fewest_resources(profiles: list[Profile], workload: Workload, rate: float, ttft_ms: float,
                     tpot_ms: float, attainment: float = 0.9, max_resources: int = 1024,
                     max_splits: int = 24) -> tuple[int, list[Candidate]]:
    """The fewest cores (or GPUs) meeting the objectives at ``rate``, over every worker size:
    ``fewest`` per profile, the size that needs the least. ValueError when none can."""
    best: tuple[int, list[Candidate]] | None = None
    reasons = []
    for prof in profiles:
        cap = workers_for(prof, max_resources)
        if cap < 1:
            continue
        try:
            n, ranked = fewest(prof, workload, rate, ttft_ms, tpot_ms, attainment, cap, max_splits)
        except ValueError as exc:
            reasons.append(f"{prof.name}: {exc}")
            continue
        need = n * unit(prof)[1]
        if best is None or need < best[0]:
            best = (need, ranked)
    if best is None:
        raise ValueError("; ".join(reasons) or f"{max_resources} fit no worker of any profile")
    return best


def run_config(best: Layout, profile: Profile) -> dict[str, list[str]]:
    """How to run ``best``: ``--set`` overrides of the cluster config, and Helm values."""
    sets = [f"mode={best.mode}"]
    helm = [f"config.mode={best.mode}"]
    if best.mode == "colocated":
        sets += [f"pools.decode.workers={best.decode_workers}", f"model.max_num_batched_tokens={best.chunk_tokens}"]
        helm += [f"pools.decode.replicas={best.decode_workers}",
                 f"config.model.max_num_batched_tokens={best.chunk_tokens}"]
    else:
        # The simulator keeps every prompt on the prefill pool: no prefill overflow, as predicted.
        sets += [f"pools.prefill.workers={best.prefill_workers}", f"pools.decode.workers={best.decode_workers}",
                 "router.prefill_overflow=false"]
        helm += [f"pools.prefill.replicas={best.prefill_workers}", f"pools.decode.replicas={best.decode_workers}",
                 "config.router.prefill_overflow=false"]
    if profile.gpus_per_worker:
        sets += [f"pools.prefill.gpus_per_worker={profile.gpus_per_worker}",
                 f"pools.decode.gpus_per_worker={profile.gpus_per_worker}"]
        helm += [f"pools.prefill.gpusPerWorker={profile.gpus_per_worker}",
                 f"pools.decode.gpusPerWorker={profile.gpus_per_worker}"]
    elif profile.threads_per_worker:
        sets += [f"pools.prefill.cpus_per_worker={profile.threads_per_worker}",
                 f"pools.decode.cpus_per_worker={profile.threads_per_worker}"]
        helm += [f"pools.prefill.cpusPerWorker={profile.threads_per_worker}",
                 f"pools.decode.cpusPerWorker={profile.threads_per_worker}"]
    return {"set": sets, "helm": helm}
