"""Open-loop arrival processes: when each request (or session) starts, in seconds from t0.

    poisson   exponential gaps, mean 1/rate (CV 1)
    gamma     gamma gaps with mean 1/rate and coefficient of variation ``cv``: cv > 1 is
              bursty, cv < 1 smoother than Poisson (vLLM's ``burstiness`` is 1/cv**2)
    constant  evenly spaced, 1/rate apart

Arrival times are drawn from a seeded generator, so a run is reproducible.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from loadtest.errors import SpecError

_REGISTRY: dict[str, Callable[..., ArrivalProcess]] = {}


def register_arrival(name: str) -> Callable[[type[ArrivalProcess]], type[ArrivalProcess]]:
    def wrap(cls: type[ArrivalProcess]) -> type[ArrivalProcess]:
        _REGISTRY[name] = cls
        cls.name = name
        return cls
    return wrap


def arrival_names() -> list[str]:
    return sorted(_REGISTRY)


def make_arrival(name: str, rate: float, cv: float | None = None) -> ArrivalProcess:
    """The registered process ``name`` at ``rate`` requests/s; ``cv`` only for gamma."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise SpecError(f"unknown arrival process {name!r}; known: {', '.join(arrival_names())}")
    if cls is GammaArrivals:
        return GammaArrivals(rate, 1.0 if cv is None else cv)
    if cv is not None:
        raise SpecError(f"cv applies to the gamma process only, not {name!r}")
    return cls(rate)


class ArrivalProcess(ABC):
    """A renewal process: independent gaps with mean ``1/rate``."""

    name = ""

    def __init__(self, rate: float) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise SpecError(f"arrival rate must be a positive number, got {rate!r}")
        self.rate = rate

    @abstractmethod
    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` inter-arrival gaps in seconds."""

    def offsets(self, rng: np.random.Generator, batch: int = 1024) -> Iterator[float]:
        """Arrival times from 0 on (the first arrival is at its first gap), without end."""
        t = 0.0
        while True:
            for gap in self.gaps(rng, batch):
                t += float(gap)
                yield t

    def describe(self) -> dict[str, object]:
        return {"process": self.name, "rate": self.rate}


@register_arrival("poisson")
class PoissonArrivals(ArrivalProcess):
    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(1.0 / self.rate, size=n)


@register_arrival("gamma")
class GammaArrivals(ArrivalProcess):
    def __init__(self, rate: float, cv: float = 1.0) -> None:
        super().__init__(rate)
        if not (math.isfinite(cv) and cv > 0):
            raise SpecError(f"gamma cv must be a positive number, got {cv!r}")
        self.cv = cv
        self.shape = 1.0 / cv ** 2
        self.scale = 1.0 / (rate * self.shape)

    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.gamma(self.shape, self.scale, size=n)

    def describe(self) -> dict[str, object]:
        return {"process": self.name, "rate": self.rate, "cv": self.cv, "shape": self.shape}


@register_arrival("constant")
class ConstantArrivals(ArrivalProcess):
    def gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, 1.0 / self.rate)


def arrival_stats(times: Sequence[float], window_s: float = 1.0) -> dict[str, float]:
    """Rate and burstiness of arrival times (sorted seconds): mean rate, inter-arrival CV,
    and the index of dispersion (variance/mean) of counts per ``window_s`` window
    (1 for Poisson, larger for bursty traffic)."""
    t = np.sort(np.asarray(times, dtype=float))
    if t.size < 3:
        raise ValueError("arrival_stats needs at least 3 arrival times")
    span = float(t[-1] - t[0])
    gaps = np.diff(t)
    mean_gap = float(gaps.mean())
    cv = float(gaps.std() / mean_gap) if mean_gap > 0 else math.inf
    n_windows = max(1, int(span // window_s))
    counts = np.histogram(t, bins=n_windows, range=(t[0], t[0] + n_windows * window_s))[0]
    mean_count = float(counts.mean())
    dispersion = float(counts.var() / mean_count) if mean_count > 0 else math.inf
    return {"n": int(t.size), "duration_s": span,
            "mean_rps": (t.size - 1) / span if span > 0 else math.inf,
            "interarrival_cv": cv, "dispersion": dispersion}
