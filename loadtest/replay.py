"""Trace replay: a loaded ``Trace`` turned into requests, with time and lengths transformed
to fit the target, and every transformation stated in the report.

- Time: timestamps are multiplied by ``time_scale`` (0.5 replays twice as fast), or scaled
  so the mean rate becomes ``rate``.
- Lengths: prompt lengths are multiplied by ``input_scale``, outputs by ``output_scale``,
  then clipped to the model's context (``ContextClipper``: output first, then prompt).
- Prefix sharing (traces with hash ids): each id becomes a block of ``block_tokens`` =
  round(512 * input_scale) tokens, the same tokens wherever the id appears, so prefix reuse
  is real and its fraction survives the scaling (the report gives it before and after).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from loadtest.arrivals import arrival_stats
from loadtest.errors import SpecError
from loadtest.spec import Plan, RequestSpec, Session, SingleRequest, Workload
from loadtest.synthetic import ContextClipper
from loadtest.tokens import TokenSpace
from loadtest.traces import Trace, prefix_reuse_fraction

if TYPE_CHECKING:
    from loadtest.targets.base import TargetInfo


@dataclass(slots=True)
class TraceTransform:
    """How a trace is fitted to the target (see the module doc)."""
    time_scale: float | None = None
    rate: float | None = None
    input_scale: float | None = None
    block_tokens: int | None = None
    output_scale: float = 1.0
    max_output: int | None = None

    def __post_init__(self) -> None:
        if self.time_scale is not None and self.rate is not None:
            raise SpecError("give time_scale or rate, not both")
        if self.input_scale is not None and self.block_tokens is not None:
            raise SpecError("give input_scale or block_tokens, not both")
        for name in ("time_scale", "rate", "input_scale", "output_scale"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise SpecError(f"{name} must be a positive number, got {value!r}")
        if self.block_tokens is not None and self.block_tokens < 1:
            raise SpecError(f"block_tokens must be >= 1, got {self.block_tokens}")


@dataclass(slots=True)
class _Planned:
    row: int
    offset_s: float
    prompt_len: int
    output_len: int
    hash_ids: tuple[int, ...] | None


class TraceWorkload(Workload):
    """Replays ``trace`` open-loop at its own (scaled) arrival times."""

    name = "trace"

    def __init__(self, trace: Trace, transform: TraceTransform | None = None,
                 seed: int = 0) -> None:
        if len(trace) < 2:
            raise SpecError("a trace replay needs at least 2 rows")
        self.trace = trace
        self.transform = transform or TraceTransform()
        self.seed = seed
        self.original = arrival_stats([r.timestamp_s for r in trace.records])
        self._summary: dict[str, Any] = {}
        self._rows: list[_Planned] = []
        self._block: int | None = None
        self._yielded = 0

    @property
    def rate(self) -> float:
        """The replay's mean offered rate (requests/s)."""
        return self.original["mean_rps"] / self.time_scale

    @property
    def time_scale(self) -> float:
        t = self.transform
        if t.rate is not None:
            return self.original["mean_rps"] / t.rate
        return 1.0 if t.time_scale is None else t.time_scale

    def input_scale(self) -> float:
        t = self.transform
        if t.block_tokens is not None:
            if self.trace.block_tokens is None:
                raise SpecError("block_tokens applies to traces with hash ids (Mooncake)")
            return t.block_tokens / self.trace.block_tokens
        return 1.0 if t.input_scale is None else t.input_scale

    def with_rate(self, rate: float, seed: int | None = None) -> TraceWorkload:
        t = self.transform
        return TraceWorkload(self.trace, TraceTransform(
            rate=rate, input_scale=t.input_scale, block_tokens=t.block_tokens,
            output_scale=t.output_scale, max_output=t.max_output),
            self.seed if seed is None else seed)

    def planned(self, info: TargetInfo) -> tuple[list[_Planned], int | None, ContextClipper]:
        """Every row after the transformation (lengths only, no tokens)."""
        scale, t = self.input_scale(), self.transform
        block = (max(1, round(self.trace.block_tokens * scale))
                 if self.trace.block_tokens is not None else None)
        clipper = ContextClipper(info.max_model_len, t.max_output)
        rows = []
        for rec in self.trace.records:
            prompt_len = max(1, round(rec.input_len * scale))
            ids = rec.hash_ids
            if ids is not None and block is not None:
                prompt_len = min(prompt_len, len(ids) * block)
            prompt_len, out_len = clipper.fit(prompt_len, round(rec.output_len * t.output_scale))
            if ids is not None and block is not None:
                ids = ids[:math.ceil(prompt_len / block)]
            rows.append(_Planned(rec.row, rec.timestamp_s * self.time_scale, prompt_len,
                                 out_len, ids))
        return rows, block, clipper

    def plan(self, info: TargetInfo) -> Plan:
        rows, block, clipper = self.planned(info)
        tokens = TokenSpace(info.vocab_size, self.seed)
        self._summary = self._transformation(rows, block, clipper, tokens)
        self._rows, self._block, self._yielded = rows, block, 0
        return Plan(self._sessions(rows, block, tokens), iter([r.offset_s for r in rows]))

    def _sessions(self, rows: list[_Planned], block: int | None,
                  tokens: TokenSpace) -> Iterator[Session]:
        for index, r in enumerate(rows):
            self._yielded = index + 1
            if r.hash_ids is not None and block is not None:
                ids: list[int] = []
                for h in r.hash_ids:
                    ids += tokens.block("hash", h, block)
                ids = ids[:r.prompt_len]
            else:
                ids = tokens.unique(r.row, r.prompt_len)
            yield SingleRequest(RequestSpec(ids, r.output_len, session=index, source_row=r.row))

    def _transformation(self, rows: list[_Planned], block: int | None,
                        clipper: ContextClipper, tokens: TokenSpace) -> dict[str, Any]:
        recs = self.trace.records
        summary: dict[str, Any] = {
            "time_scale": self.time_scale, "original_rate_rps": self.original["mean_rps"],
            "replay_rate_rps": self.rate, "input_scale": self.input_scale(),
            "output_scale": self.transform.output_scale, "clipping": clipper.describe(),
            "original_mean_input": sum(r.input_len for r in recs) / len(recs),
            "replayed_mean_input": sum(r.prompt_len for r in rows) / len(rows),
            "original_mean_output": sum(r.output_len for r in recs) / len(recs),
            "replayed_mean_output": sum(r.output_len for r in rows) / len(rows),
            "tokens": tokens.describe(),
        }
        if block is not None and self.trace.block_tokens is not None:
            summary["block_tokens"] = block
            summary["prefix_reuse_original"] = prefix_reuse_fraction(
                [r.input_len for r in recs], [r.hash_ids or () for r in recs],
                self.trace.block_tokens)
            summary["prefix_reuse_replayed"] = prefix_reuse_fraction(
                [r.prompt_len for r in rows], [r.hash_ids or () for r in rows], block)
        return summary

    def describe(self) -> dict[str, Any]:
        sent = self._rows[:self._yielded]
        if sent and self._block is not None:
            # The run may stop before the trace ends: the reuse its requests offered.
            self._summary["prefix_reuse_offered_by_sent_rows"] = prefix_reuse_fraction(
                [r.prompt_len for r in sent], [r.hash_ids or () for r in sent], self._block)
        self._summary["rows_sent"] = self._yielded
        return {"name": self.name, "trace": self.trace.name, "path": self.trace.path,
                "licence": self.trace.licence, "rows": len(self.trace),
                "first_row": self.trace.records[0].row if self.trace.records else None,
                "original_arrivals": self.original, "transform": asdict(self.transform),
                "transformation": self._summary, "seed": self.seed}
