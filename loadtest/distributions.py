"""Token-length distributions for synthetic workloads, parsed from short spec strings.

    fixed:128            always 128
    uniform:32,256       integers uniform in [32, 256]
    normal:200,50        mean 200, standard deviation 50, rounded, at least 1
    lognormal:200,0.6    median 200, log-space sigma 0.6 (long right tail, like real prompts)
    empirical:P          lengths drawn from a file of integers, one a line (or a trace's lengths)

Every sample is an int >= 1. Distributions are registered by name (``register_length``).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from loadtest.errors import SpecError

_REGISTRY: dict[str, Callable[[list[str]], LengthDistribution]] = {}


class LengthDistribution(ABC):
    """A distribution of positive integer lengths."""

    spec: str = ""

    @abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        """``n`` lengths, each >= 1."""

    @abstractmethod
    def mean(self) -> float:
        """The distribution's mean (after rounding effects are ignored)."""

    def describe(self) -> dict[str, object]:
        return {"spec": self.spec, "mean": round(self.mean(), 3)}


def register_length(name: str) -> Callable[[Callable[[list[str]], LengthDistribution]],
                                           Callable[[list[str]], LengthDistribution]]:
    """Register a factory taking the spec's comma-separated arguments."""
    def wrap(factory: Callable[[list[str]], LengthDistribution]):
        _REGISTRY[name] = factory
        return factory
    return wrap


def length_names() -> list[str]:
    return sorted(_REGISTRY)


def parse_length(spec: str) -> LengthDistribution:
    """Build a distribution from ``name:arg,arg``; a bare integer means ``fixed``."""
    text = spec.strip()
    if text.isdigit():
        text = f"fixed:{text}"
    name, _, rest = text.partition(":")
    factory = _REGISTRY.get(name)
    if factory is None:
        raise SpecError(f"length {spec!r}: unknown distribution {name!r}; known: "
                        f"{', '.join(length_names())}")
    args = [a.strip() for a in rest.split(",")] if rest else []
    dist = factory(args)
    dist.spec = text
    return dist


def _numbers(args: list[str], count: int, what: str) -> list[float]:
    if len(args) != count:
        raise SpecError(f"{what}: expected {count} argument(s), got {len(args)}")
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise SpecError(f"{what}: arguments must be numbers, got {','.join(args)!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise SpecError(f"{what}: arguments must be finite")
    return values


class Fixed(LengthDistribution):
    def __init__(self, value: int) -> None:
        if value < 1:
            raise SpecError(f"fixed length must be >= 1, got {value}")
        self.value = value

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        return [self.value] * n

    def mean(self) -> float:
        return float(self.value)


class Uniform(LengthDistribution):
    def __init__(self, low: int, high: int) -> None:
        if not 1 <= low <= high:
            raise SpecError(f"uniform needs 1 <= low <= high, got {low},{high}")
        self.low, self.high = low, high

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        return rng.integers(self.low, self.high + 1, size=n).tolist()

    def mean(self) -> float:
        return (self.low + self.high) / 2


class Normal(LengthDistribution):
    def __init__(self, mu: float, sigma: float) -> None:
        if mu < 1 or sigma < 0:
            raise SpecError(f"normal needs mean >= 1 and std >= 0, got {mu},{sigma}")
        self.mu, self.sigma = mu, sigma

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        return np.maximum(1, np.rint(rng.normal(self.mu, self.sigma, size=n))).astype(int).tolist()

    def mean(self) -> float:
        return self.mu


class LogNormal(LengthDistribution):
    def __init__(self, median: float, sigma: float) -> None:
        if median < 1 or sigma < 0:
            raise SpecError(f"lognormal needs median >= 1 and sigma >= 0, got {median},{sigma}")
        self.median, self.sigma = median, sigma

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        draws = rng.lognormal(math.log(self.median), self.sigma, size=n)
        return np.maximum(1, np.rint(draws)).astype(int).tolist()

    def mean(self) -> float:
        return self.median * math.exp(self.sigma ** 2 / 2)


class Empirical(LengthDistribution):
    """Draws (with replacement) from observed lengths."""

    def __init__(self, values: Sequence[int]) -> None:
        if not values or min(values) < 1:
            raise SpecError("empirical lengths must be a non-empty list of integers >= 1")
        self.values = np.asarray(values, dtype=np.int64)

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        return rng.choice(self.values, size=n, replace=True).tolist()

    def mean(self) -> float:
        return float(self.values.mean())


@register_length("fixed")
def _fixed(args: list[str]) -> LengthDistribution:
    (value,) = _numbers(args, 1, "fixed")
    return Fixed(int(value))


@register_length("uniform")
def _uniform(args: list[str]) -> LengthDistribution:
    low, high = _numbers(args, 2, "uniform")
    return Uniform(int(low), int(high))


@register_length("normal")
def _normal(args: list[str]) -> LengthDistribution:
    return Normal(*_numbers(args, 2, "normal"))


@register_length("lognormal")
def _lognormal(args: list[str]) -> LengthDistribution:
    return LogNormal(*_numbers(args, 2, "lognormal"))


@register_length("empirical")
def _empirical(args: list[str]) -> LengthDistribution:
    if len(args) != 1:
        raise SpecError("empirical: expected one argument, a file of integers")
    path = Path(args[0])
    try:
        values = [int(line) for line in path.read_text().split()]
    except OSError as exc:
        raise SpecError(f"empirical: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise SpecError(f"empirical: {path} must hold one integer per line") from None
    return Empirical(values)
