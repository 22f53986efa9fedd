"""Result files and the console summary of a run.

A run directory holds ``result.json`` (config, environment, figures), ``requests.csv`` and
``requests.jsonl`` (one row per request, failures included) and ``latency_cdf.png``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtest.errors import ReportError
from loadtest.record import ROW_FIELDS, RequestRecord

SCHEMA = "tandem-bench/1"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as None and tuples/sets as lists (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a partial file never replaces a good one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def read_result(path: str | Path) -> dict[str, Any]:
    """Load a ``result.json``/``sweep.json``; raise ReportError if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ReportError(f"{path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ReportError(f"{path}: not a tandem bench result (schema {SCHEMA!r})")
    return data


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    """Where the load was generated from."""
    versions = {}
    for package in ("tandem-serve", "grpcio", "aiohttp", "numpy", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "hostname": socket.gethostname(), "platform": platform.platform(),
            "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
            "git_commit": _git_commit(), "packages": versions, "argv": sys.argv}


def write_requests(out_dir: Path, records: Sequence[RequestRecord]) -> dict[str, str]:
    """``requests.csv`` (ITL gaps joined by ';') and ``requests.jsonl``."""
    csv_path, jsonl_path = out_dir / "requests.csv", out_dir / "requests.jsonl"
    rows = [r.to_row() for r in records]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (";".join(f"{g:.3f}" for g in v) if isinstance(v, list)
                                 else "" if v is None else v) for k, v in row.items()})
    with open(jsonl_path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(jsonable(row)) + "\n")
    return {"requests_csv": str(csv_path), "requests_jsonl": str(jsonl_path)}


def offered_text(t: dict) -> str:
    """What was offered and what was sent, each in its own unit."""
    if t.get("offered_users_per_s") is not None:
        offered = f"offered {_fmt(t['offered_users_per_s'], 2)} users/s"
    elif t.get("offered_rps") is not None:
        offered = f"offered {_fmt(t['offered_rps'], 2)} req/s"
    else:
        offered = "closed loop"
    return f"{offered}, sent {_fmt(t.get('send_rate_rps'), 2)} req/s"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_summary(result: dict[str, Any]) -> str:
    """The console summary of a run result."""
    f = result["figures"]
    out = result["outcome"]
    counts = f["counts"]
    lines = [f"run {result['run_id']}: {result['config']['workload']['name']} workload on "
             f"{result['config']['target']['url']} ({result['target']['model']})",
             f"  stopped: {out['stop_reason']} after {_fmt(out['duration_s'], 2)} s"
             + ("  [INTERRUPTED: partial results]" if out["interrupted"] else ""),
             f"  requests: {counts['total']} total, {counts['ok']} ok, {counts['failed']} failed "
             f"{counts['by_status']}"]
    lines.append(f"  {'latency (ms)':<14}{'mean':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for name, dist in f["latency_ms"].items():
        lines.append(f"  {name:<14}" + "".join(f"{_fmt(dist.get(k)):>9}"
                                                for k in ("mean", "p50", "p90", "p99", "max")))
    t, g = f["throughput"], f["goodput"]
    slo = g["slo"]
    lines.append(f"  throughput: {_fmt(t['completed_rps'], 2)} req/s ok, "
                 f"{_fmt(t['output_tokens_per_s'])} out tok/s, {_fmt(t['input_tokens_per_s'])} "
                 f"in tok/s ({offered_text(t)})")
    lines.append(f"  goodput: {_fmt(g['goodput_rps'], 2)} req/s; SLO attainment "
                 f"{100 * g['slo_attainment']:.1f}% (TTFT<={slo['ttft_ms']:g} ms "
                 f"{100 * g['ttft_attainment']:.1f}%, TPOT<={slo['tpot_ms']:g} ms "
                 f"{100 * g['tpot_attainment']:.1f}%)")
    tok = f["tokens"]
    lines.append(f"  tokens: prompt {tok['prompt']}, cached {tok['cached_prompt']} "
                 f"(hit rate {100 * tok['prefix_hit_rate']:.1f}%), completion {tok['completion']}")
    derived = (result.get("cluster_metrics") or {}).get("derived")
    if derived:
        lines.append(f"  cluster: {derived}")
    lines.append(f"  files: {', '.join(result.get('files', {}).values())}")
    return "\n".join(lines)
