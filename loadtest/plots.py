"""PNG plots (matplotlib, Agg backend): latency CDFs, SLO attainment and goodput vs rate."""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from loadtest.metrics import SLO
from loadtest.record import RequestRecord

_CDF_PANELS = (("ttft", "TTFT (ms)"), ("tpot", "TPOT (ms)"), ("itl", "inter-token gap (ms)"),
               ("e2e", "end-to-end latency (ms)"))


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def latency_values(records: Sequence[RequestRecord]) -> dict[str, list[float]]:
    """Successful requests' TTFT, TPOT, ITL gaps and e2e latencies."""
    ok = [r for r in records if r.ok]
    return {"ttft": [r.ttft_ms for r in ok if r.ttft_ms is not None],
            "tpot": [t for r in ok if (t := r.tpot_ms) is not None],
            "itl": [g for r in ok for g in r.itl_ms],
            "e2e": [r.e2e_ms for r in ok if r.e2e_ms is not None]}


def cdf_label(name: str, records: Sequence[RequestRecord], n_values: int) -> str:
    """A CDF line's legend: its sample count and the requests it cannot include."""
    not_ok = Counter(r.status.value for r in records if not r.ok)
    missing = ", ".join(f"{n} {status}" for status, n in sorted(not_ok.items()))
    return f"{name} (n={n_values}" + (f"; not shown: {missing})" if missing else ")")


def plot_latency_cdfs(series: Mapping[str, Sequence[RequestRecord]], path: Path,
                      slo: SLO | None = None, title: str = "") -> Path:
    """One CDF panel per latency, one line per labelled set of records. Only requests that
    completed have latencies: how many others (refused, failed, timed out) each line leaves
    out is in its legend and the title."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (key, label) in zip(axes.flat, _CDF_PANELS):
        for name, records in series.items():
            values = sorted(latency_values(records)[key])
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, ys, where="post", label=cdf_label(name, records, len(values)))
        objective = {"ttft": slo.ttft_ms, "tpot": slo.tpot_ms}.get(key) if slo else None
        if objective:
            ax.axvline(objective, color="red", linestyle="--", linewidth=1, label="SLO")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests" if key != "itl" else "fraction of gaps")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    left_out = sum(1 for records in series.values() for r in records if not r.ok)
    fig.suptitle((title or "latency CDFs") + (f" (completed requests only: {left_out} refused "
                                              "or failed left out)" if left_out else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_vs_rate(rates: Sequence[float], values: Sequence[float], path: Path, *, ylabel: str,
                 title: str, target: float | None = None, ideal: bool = False) -> Path:
    """A line of ``values`` against offered rate; ``target``: a horizontal objective line;
    ``ideal``: the y = rate diagonal (for goodput)."""
    plt = _pyplot()
    order = sorted(range(len(rates)), key=lambda i: rates[i])
    xs, ys = [rates[i] for i in order], [values[i] for i in order]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, ys, marker="o", label=ylabel)
    if target is not None:
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target {target:g}")
    if ideal and xs:
        ax.plot([0, max(xs)], [0, max(xs)], color="grey", linestyle=":", label="offered")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
