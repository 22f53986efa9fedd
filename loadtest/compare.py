"""``tandem bench compare a.json b.json``: two results side by side, with ratios b/a."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadtest.errors import ReportError
from loadtest.report import read_result

_RUN_FIGURES = [
    *(f"latency_ms.{lat}.{stat}" for lat in ("ttft", "tpot", "itl", "e2e")
      for stat in ("mean", "p50", "p90", "p99")),
    "throughput.completed_rps", "throughput.output_tokens_per_s",
    "throughput.input_tokens_per_s", "goodput.goodput_rps", "goodput.slo_attainment",
    "counts.total", "counts.ok", "counts.failed", "tokens.prefix_hit_rate",
]
# Two runs whose prefix hit rates differ by more than this (absolute) did not see the same
# cache: e.g. the same seed against a server still warm from the first run.
HIT_RATE_GAP = 0.10
_SWEEP_FIGURES = ["max_rate_meeting_slo", "goodput_at_max_rate", "max_goodput_rps",
                  "first_failing_rate"]


@dataclass(slots=True)
class Row:
    metric: str
    a: float | None
    b: float | None

    @property
    def ratio(self) -> float | None:
        """b / a (None when either is missing or a is 0)."""
        if self.a is None or self.b is None or self.a == 0:
            return None
        return self.b / self.a


def _dig(data: dict[str, Any], dotted: str) -> float | None:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """Rows of the figures both results can have (same kind: two runs or two sweeps)."""
    if a.get("kind") != b.get("kind"):
        raise ReportError(f"cannot compare a {a.get('kind')} with a {b.get('kind')}")
    if a["kind"] == "run":
        return [Row(m, _dig(a["figures"], m), _dig(b["figures"], m)) for m in _RUN_FIGURES]
    if a["kind"] == "sweep":
        return [Row(m, _dig(a["sweep"], m), _dig(b["sweep"], m)) for m in _SWEEP_FIGURES]
    raise ReportError(f"unknown result kind {a.get('kind')!r}")


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def format_table(rows: list[Row], label_a: str, label_b: str) -> str:
    width = max(len(r.metric) for r in rows)
    col_a, col_b = max(12, len(label_a)), max(12, len(label_b))
    lines = [f"{'metric':<{width}}  {label_a:>{col_a}}  {label_b:>{col_b}}  {'b/a':>8}"]
    for r in rows:
        lines.append(f"{r.metric:<{width}}  {_cell(r.a):>{col_a}}  {_cell(r.b):>{col_b}}  "
                     f"{_cell(r.ratio):>8}")
    return "\n".join(lines)


def warnings(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Why the two results may not be like for like (printed above the table)."""
    if a.get("kind") != "run" or b.get("kind") != "run":
        return []
    out = []
    ha, hb = (_dig(r["figures"], "tokens.prefix_hit_rate") for r in (a, b))
    if ha is not None and hb is not None and abs(ha - hb) > HIT_RATE_GAP:
        out.append(f"WARNING: prefix hit rates differ (a {100 * ha:.1f}%, b {100 * hb:.1f}%): "
                   "one run found a cache the other did not (the same seed against a server "
                   "still warm from an earlier run?); latency and throughput are not like for like")
    for what in ("workload", "slo"):
        if a.get("config", {}).get(what) != b.get("config", {}).get(what):
            out.append(f"WARNING: the two runs' {what} settings differ")
    return out


def compare_files(path_a: str, path_b: str) -> str:
    """The side-by-side table of two result files, after any warnings."""
    a, b = read_result(path_a), read_result(path_b)
    header = [f"a: {path_a} ({_describe(a)})", f"b: {path_b} ({_describe(b)})", *warnings(a, b)]
    return "\n".join(header + [format_table(compare(a, b), "a", "b")])


def _describe(result: dict[str, Any]) -> str:
    target = result.get("config", {}).get("target", {}).get("url", "?")
    workload = result.get("config", {}).get("workload", {}).get("name", "?")
    return f"{result.get('kind')} of {workload} on {target}"
