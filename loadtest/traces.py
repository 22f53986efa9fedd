"""Loaders of real serving traces: the Azure LLM inference CSVs and the Mooncake JSONL.

Shipped traces (``loadtest/data``, gzip) are named ``azure-code``, ``azure-conv``,
``mooncake-conv`` and ``mooncake-synth``; any other path is read by its extension
(``.csv``/``.csv.gz``: Azure columns; ``.jsonl``/``.jsonl.gz``: Mooncake fields).
"""
from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.errors import TraceError

DATA_DIR = Path(__file__).resolve().parent / "data"
MOONCAKE_BLOCK_TOKENS = 512     # a Mooncake hash_id names a block of this many tokens

SHIPPED = {
    "azure-code": ("azure2023_code.csv.gz", "LICENSE.AzurePublicDataset.CC-BY-4.0.txt"),
    "azure-conv": ("azure2023_conv.csv.gz", "LICENSE.AzurePublicDataset.CC-BY-4.0.txt"),
    "mooncake-conv": ("mooncake_conversation_trace.jsonl.gz", "LICENSE.Mooncake.Apache-2.0.txt"),
    "mooncake-synth": ("mooncake_synthetic_trace.jsonl.gz", "LICENSE.Mooncake.Apache-2.0.txt"),
}


@dataclass(slots=True, frozen=True)
class TraceRecord:
    """One request of a trace. ``timestamp_s`` is seconds since the trace's first row."""
    row: int
    timestamp_s: float
    input_len: int
    output_len: int
    hash_ids: tuple[int, ...] | None = None


@dataclass(slots=True)
class Trace:
    """A loaded trace. ``block_tokens``: tokens per hash id (None without hash ids)."""
    name: str
    path: str
    records: list[TraceRecord]
    block_tokens: int | None = None
    licence: str | None = None
    rows_skipped: int = 0
    info: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)


def trace_names() -> list[str]:
    return sorted(SHIPPED)


def load_trace(name_or_path: str, start: int = 0, limit: int | None = None) -> Trace:
    """Load a shipped trace by name, or a trace file by path; rows ``[start, start+limit)``.
    Timestamps are re-based so the first selected row is at 0."""
    if start < 0 or (limit is not None and limit < 1):
        raise TraceError(f"trace rows: start must be >= 0 and limit >= 1, got {start}, {limit}")
    if name_or_path in SHIPPED:
        filename, licence = SHIPPED[name_or_path]
        path, licence_path = DATA_DIR / filename, str(DATA_DIR / licence)
    else:
        path, licence_path = Path(name_or_path), None
        if not path.is_file():
            raise TraceError(f"trace {name_or_path!r}: not a shipped trace "
                             f"({', '.join(trace_names())}) nor a file")
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".csv":
        rows, block = _azure_rows(path), None
    elif kind == ".jsonl":
        rows, block = _mooncake_rows(path), MOONCAKE_BLOCK_TOKENS
    else:
        raise TraceError(f"trace {path}: unknown format (want .csv or .jsonl, optionally .gz)")
    records = []
    for rec in rows:
        if rec.row < start:
            continue
        if limit is not None and len(records) >= limit:
            break
        records.append(rec)
    if not records:
        raise TraceError(f"trace {path}: no rows selected (start={start}, limit={limit})")
    t0 = min(r.timestamp_s for r in records)
    records = [TraceRecord(r.row, r.timestamp_s - t0, r.input_len, r.output_len, r.hash_ids)
               for r in records]
    records.sort(key=lambda r: (r.timestamp_s, r.row))
    return Trace(name_or_path, str(path), records, block, licence_path)


def _open_text(path: Path) -> io.TextIOBase:
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"trace {path}: {exc.strerror or exc}") from None


def _positive_int(value: object, what: str, where: str, minimum: int = 0) -> int:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise TraceError(f"{where}: {what} must be >= {minimum}, got {number}")
    return number


def _azure_rows(path: Path) -> Iterator[TraceRecord]:
    """TIMESTAMP (``YYYY-MM-DD HH:MM:SS.fffffff``), ContextTokens, GeneratedTokens."""
    with _open_text(path) as handle:
        try:
            reader = csv.DictReader(handle)
            need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
            if not reader.fieldnames or not need <= set(reader.fieldnames):
                raise TraceError(f"{path}: Azure CSV needs columns {sorted(need)}, "
                                 f"got {reader.fieldnames}")
            epoch: float | None = None
            for row_index, row in enumerate(reader):
                where = f"{path}:{row_index + 2}"
                try:
                    stamp = datetime.datetime.fromisoformat(row["TIMESTAMP"]).timestamp()
                except (TypeError, ValueError):
                    raise TraceError(f"{where}: bad TIMESTAMP {row['TIMESTAMP']!r}") from None
                epoch = stamp if epoch is None else epoch
                yield TraceRecord(row_index, stamp - epoch,
                                  _positive_int(row["ContextTokens"], "ContextTokens", where, 1),
                                  _positive_int(row["GeneratedTokens"], "GeneratedTokens", where, 1))
        except (csv.Error, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
            raise TraceError(f"{path}: unreadable CSV: {exc}") from None


def _mooncake_rows(path: Path) -> Iterator[TraceRecord]:
    """JSON lines with timestamp (ms), input_length, output_length, hash_ids."""
    with _open_text(path) as handle:
        try:
            for row_index, line in enumerate(handle):
                where = f"{path}:{row_index + 1}"
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(f"{where}: bad JSON: {exc.msg}") from None
                if not isinstance(obj, dict):
                    raise TraceError(f"{where}: each line must be a JSON object")
                missing = {"timestamp", "input_length", "output_length", "hash_ids"} - set(obj)
                if missing:
                    raise TraceError(f"{where}: missing field(s) {sorted(missing)}")
                ids = obj["hash_ids"]
                if not isinstance(ids, list):
                    raise TraceError(f"{where}: hash_ids must be a list of integers")
                hash_ids = tuple(_positive_int(h, "hash_ids[]", where) for h in ids)
                input_len = _positive_int(obj["input_length"], "input_length", where, 1)
                if len(hash_ids) * MOONCAKE_BLOCK_TOKENS < input_len:
                    raise TraceError(f"{where}: {len(hash_ids)} hash_ids cannot cover "
                                     f"input_length {input_len}")
                yield TraceRecord(row_index,
                                  _positive_int(obj["timestamp"], "timestamp", where) / 1000.0,
                                  input_len,
                                  _positive_int(obj["output_length"], "output_length", where, 1),
                                  hash_ids)
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
            raise TraceError(f"{path}: unreadable JSONL: {exc}") from None


def prefix_reuse_fraction(lengths: Sequence[int], hash_ids: Sequence[Sequence[int]],
                          block_tokens: int) -> float:
    """The fraction of prompt tokens that an infinite prefix cache could reuse: for each
    request in order, the leading blocks whose ids an earlier request already had."""
    if len(lengths) != len(hash_ids):
        raise ValueError("lengths and hash_ids must have one entry per request")
    seen: set[int] = set()
    reused = total = 0
    for length, ids in zip(lengths, hash_ids):
        leading = 0
        for h in ids:
            if h not in seen:
                break
            leading += 1
        reused += min(leading * block_tokens, length)
        total += length
        seen.update(ids)
    return reused / total if total else 0.0
