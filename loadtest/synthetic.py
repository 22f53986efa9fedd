"""Synthetic workloads: prompt and output lengths from distributions, open-loop arrivals
from an ``ArrivalProcess`` or closed-loop at a fixed concurrency.

Prompts are random token ids, unique per request, optionally after a prefix shared by
every request (``shared_prefix``: a system prompt, for prefix-cache experiments).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from loadtest.arrivals import ArrivalProcess, make_arrival
from loadtest.distributions import LengthDistribution
from loadtest.errors import SpecError
from loadtest.spec import Plan, RequestSpec, Session, SingleRequest, Workload
from loadtest.tokens import TokenSpace

if TYPE_CHECKING:
    from loadtest.targets.base import TargetInfo


class ContextClipper:
    """Fits (prompt, output) lengths into a context of ``max_model_len`` tokens and counts
    what it had to change: the output first to at most ``max_output``, then the prompt."""

    def __init__(self, max_model_len: int, max_output: int | None = None) -> None:
        if max_model_len < 2:
            raise SpecError(f"the model's context ({max_model_len}) is too short to load-test")
        self.max_model_len = max_model_len
        self.max_output = min(max_output or max_model_len // 2, max_model_len - 1)
        self.requests = 0
        self.clipped_inputs = 0
        self.clipped_outputs = 0

    def fit(self, prompt_len: int, output_len: int) -> tuple[int, int]:
        self.requests += 1
        out = max(1, output_len)
        if out > self.max_output:
            out = self.max_output
            self.clipped_outputs += 1
        prompt = max(1, prompt_len)
        if prompt + out > self.max_model_len:
            prompt = self.max_model_len - out
            self.clipped_inputs += 1
        return prompt, out

    def describe(self) -> dict[str, Any]:
        return {"max_model_len": self.max_model_len, "max_output_tokens": self.max_output,
                "requests": self.requests, "clipped_inputs": self.clipped_inputs,
                "clipped_outputs": self.clipped_outputs}


class SyntheticWorkload(Workload):
    """Requests with lengths drawn from distributions.

    Args:
        input_len, output_len: length distributions (prompt tokens, generated tokens).
        arrival: an open-loop arrival process, or None for closed loop.
        concurrency: the closed-loop concurrency (with ``arrival`` None).
        shared_prefix: tokens at the start of every prompt, the same for all requests
            (counted within the prompt length).
        max_output: clip generated lengths to this (default: half the context).
        seed: seeds lengths, arrivals and tokens.
    """

    name = "synthetic"

    def __init__(self, input_len: LengthDistribution, output_len: LengthDistribution, *,
                 arrival: ArrivalProcess | None = None, concurrency: int | None = None,
                 shared_prefix: int = 0, max_output: int | None = None, seed: int = 0) -> None:
        if (arrival is None) == (concurrency is None):
            raise SpecError("give either an arrival process (open loop) or a concurrency "
                            "(closed loop)")
        if shared_prefix < 0:
            raise SpecError(f"shared_prefix must be >= 0, got {shared_prefix}")
        self.input_len, self.output_len = input_len, output_len
        self.arrival, self.concurrency = arrival, concurrency
        self.shared_prefix, self.max_output, self.seed = shared_prefix, max_output, seed
        self.clipper: ContextClipper | None = None
        self.tokens: TokenSpace | None = None

    def with_rate(self, rate: float, seed: int | None = None) -> SyntheticWorkload:
        if self.arrival is None:
            raise SpecError("a closed-loop workload cannot be swept by rate")
        cv = getattr(self.arrival, "cv", None)
        return SyntheticWorkload(self.input_len, self.output_len,
                                 arrival=make_arrival(self.arrival.name, rate, cv),
                                 shared_prefix=self.shared_prefix, max_output=self.max_output,
                                 seed=self.seed if seed is None else seed)

    def plan(self, info: TargetInfo) -> Plan:
        self.clipper = ContextClipper(info.max_model_len, self.max_output)
        self.tokens = TokenSpace(info.vocab_size, self.seed)
        rng = np.random.default_rng([self.seed, 1])
        offsets = None
        if self.arrival is not None:
            offsets = self.arrival.offsets(np.random.default_rng([self.seed, 2]))
        return Plan(self._sessions(rng, self.clipper, self.tokens), offsets, self.concurrency)

    def _sessions(self, rng: np.random.Generator, clipper: ContextClipper, tokens: TokenSpace,
                  batch: int = 256) -> Iterator[Session]:
        index = 0
        while True:
            inputs = self.input_len.sample(rng, batch)
            outputs = self.output_len.sample(rng, batch)
            for prompt_len, out_len in zip(inputs, outputs):
                prompt_len, out_len = clipper.fit(prompt_len, out_len)
                shared = min(self.shared_prefix, prompt_len)
                ids = tokens.block("shared", 0, shared) + tokens.unique(index, prompt_len - shared)
                yield SingleRequest(RequestSpec(ids, out_len, session=index))
                index += 1

    def describe(self) -> dict[str, Any]:
        schedule: dict[str, Any] = (self.arrival.describe() if self.arrival is not None
                                    else {"process": "closed", "concurrency": self.concurrency})
        return {"name": self.name, "input_len": self.input_len.describe(),
                "output_len": self.output_len.describe(), "arrivals": schedule,
                "shared_prefix": self.shared_prefix, "seed": self.seed,
                "clipping": self.clipper.describe() if self.clipper else None,
                "tokens": self.tokens.describe() if self.tokens else None}


def expected_rate(workload: Workload) -> float | None:
    """The offered request rate of an open-loop workload, if it has one (a multi-turn
    workload's arrivals are users, not requests: see ``expected_user_rate``)."""
    if getattr(workload, "arrivals_are_users", False):
        return None
    arrival = getattr(workload, "arrival", None)
    rate = getattr(arrival, "rate", None) or getattr(workload, "rate", None)
    return float(rate) if rate and math.isfinite(rate) else None


def expected_user_rate(workload: Workload) -> float | None:
    """New users (conversations) per second of an open-loop multi-turn workload."""
    if not getattr(workload, "arrivals_are_users", False):
        return None
    rate = getattr(getattr(workload, "arrival", None), "rate", None)
    return float(rate) if rate and math.isfinite(rate) else None
