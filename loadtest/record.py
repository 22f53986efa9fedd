"""What is measured for each request: ``RequestRecord``, and its ``Status``."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields


class Status(str, enum.Enum):
    """How a request ended. Everything but ``OK`` counts against goodput."""
    OK = "ok"
    REFUSED = "refused"                 # the server refused admission (RESOURCE_EXHAUSTED, 429)
    INVALID = "invalid"                 # the server rejected the request (INVALID_ARGUMENT, 4xx)
    UNAVAILABLE = "unavailable"         # no server / no healthy worker (UNAVAILABLE, 503)
    TIMEOUT = "timeout"                 # the per-request timeout passed
    ABORTED = "aborted"                 # the server finished it with reason "abort"
    ERROR = "error"                     # any other failure; ``error`` says what
    CANCELLED = "cancelled"             # still in flight when the run stopped (cap or Ctrl-C)
    CLIENT_OVERLOAD = "client_overload"  # not sent: the harness's own in-flight cap was full
    IN_FLIGHT = "in_flight"             # transient; never in a finished run


@dataclass(slots=True)
class RequestRecord:
    """One request's measurements. Times ``*_s`` are seconds since the run's t0;
    latencies ``*_ms`` are milliseconds measured by the client."""
    index: int
    session: int = 0
    turn: int = 0
    status: Status = Status.IN_FLIGHT
    error: str = ""
    request_id: str = ""
    send_s: float = 0.0
    first_token_s: float | None = None
    end_s: float | None = None
    ttft_ms: float | None = None
    e2e_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)   # gap before each delta after the first
    prompt_tokens: int = 0              # as reported by the server (0 if it did not say)
    sent_prompt_tokens: int = 0         # as sent
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    max_tokens: int = 0
    server_ttft_ms: float | None = None
    finish_reason: str = ""
    prefill_worker: str = ""
    decode_worker: str = ""
    output_token_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def tpot_ms(self) -> float | None:
        """Mean time per output token after the first: (e2e - ttft) / (tokens - 1);
        None when fewer than two tokens came back."""
        if self.e2e_ms is None or self.ttft_ms is None or self.completion_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.completion_tokens - 1)

    def to_row(self) -> dict[str, object]:
        """A flat, JSON-safe dict (the per-request file's row); token ids are left out."""
        row: dict[str, object] = {}
        for f in fields(self):
            if f.name == "output_token_ids":
                continue
            value = getattr(self, f.name)
            row[f.name] = value.value if isinstance(value, Status) else value
        row["tpot_ms"] = self.tpot_ms
        return row


ROW_FIELDS = [f.name for f in fields(RequestRecord) if f.name != "output_token_ids"] + ["tpot_ms"]
