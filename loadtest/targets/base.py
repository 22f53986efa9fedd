"""The ``Target`` interface: something that serves streamed completions, and its registry.

A target is chosen by the scheme of its URL: ``tandem://host:port`` (a Tandem router over
gRPC, via the SDK) or ``http(s)://host:port`` (any OpenAI-compatible server). A target
turns one ``RequestSpec`` into measurements on a ``RequestRecord``; it never raises for a
failed request, it sets the record's status instead.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from loadtest.errors import SpecError
from loadtest.record import RequestRecord
from loadtest.spec import RequestSpec

_REGISTRY: dict[str, type[Target]] = {}


@dataclass(slots=True)
class TargetInfo:
    """What the harness needs to know about the served model."""
    model: str
    vocab_size: int
    max_model_len: int
    block_size: int = 0
    eos_token_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)   # cluster shape etc., for the report

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class TargetOptions:
    """Request settings shared by all targets."""
    request_timeout_s: float = 60.0
    temperature: float = 0.0
    ignore_eos: bool = True             # exact output lengths: the workload decides them
    model: str | None = None            # OpenAI: the model name (default: the first served)
    vocab_size: int | None = None       # OpenAI: the vocabulary size (servers do not say)
    max_model_len: int | None = None    # overrides what the server reports
    retries: int = 0                    # SDK retries of UNAVAILABLE; 0 keeps failures visible
    connect_timeout_s: float = 10.0     # to connect and describe the model, before the run


def register_target(*schemes: str) -> Callable[[type[Target]], type[Target]]:
    def wrap(cls: type[Target]) -> type[Target]:
        for scheme in schemes:
            _REGISTRY[scheme] = cls
        return cls
    return wrap


def target_schemes() -> list[str]:
    return sorted(_REGISTRY)


def make_target(url: str, options: TargetOptions | None = None) -> Target:
    """The target for ``url`` (``tandem://host:port`` or ``http://host:port``)."""
    import loadtest.targets.openai  # noqa: F401  (registers)
    import loadtest.targets.tandem  # noqa: F401  (registers)
    parts = urlsplit(url)
    cls = _REGISTRY.get(parts.scheme)
    if cls is None or not parts.netloc:
        raise SpecError(f"target {url!r}: expected scheme://host:port with a scheme in "
                        f"{', '.join(target_schemes())}")
    return cls(url, options or TargetOptions())


class Target(ABC):
    """A server under load."""

    kind = ""

    def __init__(self, url: str, options: TargetOptions) -> None:
        self.url = url
        self.options = options

    @abstractmethod
    async def open(self) -> TargetInfo:
        """Connect and describe the model; raise ``TargetError`` if it cannot."""

    @abstractmethod
    async def execute(self, spec: RequestSpec, record: RequestRecord,
                      clock: Callable[[], float]) -> None:
        """Send ``spec``, stream the answer, and fill ``record`` (status included).
        ``clock()`` is seconds since the run's t0."""

    async def scrape_info(self) -> dict[str, Any]:
        """Server-side facts for the report after a run (optional)."""
        return {}

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, **asdict(self.options)}


class DeltaTimer:
    """Turns delta arrival times into TTFT and inter-token gaps on a record."""

    __slots__ = ("record", "clock", "last")

    def __init__(self, record: RequestRecord, clock: Callable[[], float]) -> None:
        self.record = record
        self.clock = clock
        self.last: float | None = None

    def delta(self, n_tokens: int, token_ids: list[int] | None = None) -> None:
        now = self.clock()
        record = self.record
        if self.last is None:
            record.first_token_s = now
            record.ttft_ms = (now - record.send_s) * 1000.0
        else:
            record.itl_ms.append((now - self.last) * 1000.0)
        self.last = now
        record.completion_tokens += n_tokens
        if token_ids:
            record.output_token_ids.extend(token_ids)


def monotonic_clock(t0: float) -> Callable[[], float]:
    """Seconds since ``t0`` (a ``time.perf_counter()`` value)."""
    return lambda: time.perf_counter() - t0
