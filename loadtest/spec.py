"""Workload building blocks: a ``RequestSpec`` (what to send), a ``Session`` (a chain of
requests where each may depend on the previous answer), a ``Plan`` (sessions and when
they start) and the ``Workload`` interface that makes a plan for a target's model."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadtest.errors import SpecError
from loadtest.record import RequestRecord

if TYPE_CHECKING:
    from loadtest.targets.base import TargetInfo


@dataclass(slots=True)
class RequestSpec:
    """One request to send: exact prompt token ids and the number of tokens to generate."""
    token_ids: list[int]
    max_tokens: int
    session: int = 0
    turn: int = 0
    delay_s: float = 0.0                # wait this long before sending (think time)
    source_row: int | None = None       # the trace row it came from

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise SpecError("a request needs at least one prompt token")
        if self.max_tokens < 1:
            raise SpecError(f"max_tokens must be >= 1, got {self.max_tokens}")


class Session(ABC):
    """A sequence of requests sent one after another by one simulated user."""

    @abstractmethod
    def next_request(self, previous: RequestRecord | None) -> RequestSpec | None:
        """The next request given the previous one's record (None before the first);
        None when the session is over."""


class SingleRequest(Session):
    """A session of exactly one request."""

    __slots__ = ("spec", "_sent")

    def __init__(self, spec: RequestSpec) -> None:
        self.spec = spec
        self._sent = False

    def next_request(self, previous: RequestRecord | None) -> RequestSpec | None:
        if self._sent:
            return None
        self._sent = True
        return self.spec


@dataclass(slots=True)
class Plan:
    """Sessions and their schedule.

    Open loop: ``start_offsets`` gives each session's start time (seconds from t0).
    Closed loop: ``start_offsets`` is None and ``concurrency`` sessions run at a time,
    each starting as soon as a slot frees.
    """
    sessions: Iterator[Session]
    start_offsets: Iterator[float] | None = None
    concurrency: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.start_offsets is None) == (self.concurrency is None):
            raise SpecError("a plan is either open-loop (start offsets) or closed-loop "
                            "(a concurrency), not both or neither")
        if self.concurrency is not None and self.concurrency < 1:
            raise SpecError(f"concurrency must be >= 1, got {self.concurrency}")


class Workload(ABC):
    """Makes a plan for a served model; describes itself (and what it did) for the report."""

    name = ""

    @abstractmethod
    def plan(self, info: TargetInfo) -> Plan:
        """A fresh plan (sessions are generated lazily) for the model in ``info``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Configuration, plus any transformation applied (scaling, clipping, truncation)."""

    def with_rate(self, rate: float, seed: int | None = None) -> Workload:
        """The same workload at another open-loop rate (for sweeps); ``seed`` (default:
        the same) gives fresh prompts, so one step does not warm the cache for the next."""
        raise SpecError(f"the {self.name} workload cannot be swept by rate")
