"""The trace loaders parse the shipped traces, and reject malformed ones clearly."""
from __future__ import annotations

import gzip

import pytest

from loadtest.errors import TraceError
from loadtest.traces import (
    DATA_DIR, MOONCAKE_BLOCK_TOKENS, SHIPPED, load_trace, prefix_reuse_fraction,
)

ROWS = {"azure-code": 8819, "azure-conv": 19366, "mooncake-conv": 12031, "mooncake-synth": 3993}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_each_shipped_trace_loads_whole_with_its_licence_and_sorted_times(name):
    trace = load_trace(name)
    assert len(trace) == ROWS[name]
    assert trace.licence is not None and (DATA_DIR / SHIPPED[name][1]).is_file()
    times = [r.timestamp_s for r in trace.records]
    assert times[0] == 0.0 and times == sorted(times)
    assert all(r.input_len >= 1 and r.output_len >= 1 for r in trace.records)


def test_shipped_files_stay_small():
    for filename, _ in SHIPPED.values():
        assert (DATA_DIR / filename).stat().st_size < 1 << 20


def test_azure_rows_carry_the_csv_values():
    trace = load_trace("azure-code", limit=2)
    first, second = trace.records
    assert (first.input_len, first.output_len, first.hash_ids) == (4808, 10, None)
    assert (second.input_len, second.output_len) == (3180, 8)
    assert second.timestamp_s == pytest.approx(0.052, abs=1e-6)   # 18:17:04.03196 - 03.97996
    assert trace.block_tokens is None


def test_mooncake_rows_carry_hash_ids_and_millisecond_timestamps():
    trace = load_trace("mooncake-conv", limit=3)
    assert trace.block_tokens == MOONCAKE_BLOCK_TOKENS
    assert trace.records[0].hash_ids == tuple(range(14))
    assert trace.records[0].input_len == 6758 and trace.records[0].output_len == 500
    assert trace.records[1].hash_ids[0] == 0     # shares the first block with row 0


@pytest.mark.parametrize("name, published", [("mooncake-conv", 0.3736237491291324),
                                             ("mooncake-synth", 0.6512444360312151)])
def test_prefix_reuse_of_the_mooncake_traces_matches_the_published_summary(name, published):
    trace = load_trace(name)
    reuse = prefix_reuse_fraction([r.input_len for r in trace.records],
                                  [r.hash_ids for r in trace.records], trace.block_tokens)
    assert reuse == pytest.approx(published, rel=1e-9)


def test_prefix_reuse_on_a_hand_computed_example():
    # request 2 reuses block 1 (4 tokens) of its 6; request 3 reuses all 3 of its tokens.
    assert prefix_reuse_fraction([8, 6, 3], [[1, 2], [1, 3], [1]], 4) == pytest.approx(7 / 17)


def test_start_and_limit_select_rows_and_rebase_time():
    trace = load_trace("azure-conv", start=100, limit=50)
    assert len(trace) == 50
    assert trace.records[0].row == 100 and trace.records[0].timestamp_s == 0.0


def test_plain_and_gzipped_files_are_read_by_extension(tmp_path):
    text = '{"timestamp": 5, "input_length": 700, "output_length": 3, "hash_ids": [1, 2]}\n' \
           '{"timestamp": 3005, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n'
    plain, packed = tmp_path / "t.jsonl", tmp_path / "t.jsonl.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        trace = load_trace(str(path))
        assert [r.timestamp_s for r in trace.records] == [0.0, 3.0]
        assert trace.licence is None


@pytest.mark.parametrize("content, message", [
    ('{"timestamp": 0, "input_length": 5}\n', "missing field"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": 3}\n', "hash_ids"),
    ('{"timestamp": 0, "input_length": 2000, "output_length": 1, "hash_ids": [1]}\n',
     "cannot cover"),
    ('{"timestamp": 0, "input_length": -1, "output_length": 1, "hash_ids": [1]}\n', ">= 1"),
    ('not json\n', "bad JSON"),
])
def test_malformed_jsonl_rows_raise_with_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [0]}\n'
                    + content)
    with pytest.raises(TraceError, match=message) as info:
        load_trace(str(path))
    assert "bad.jsonl:2" in str(info.value)


def test_malformed_csv_raises_naming_the_problem(tmp_path):
    missing = tmp_path / "cols.csv"
    missing.write_text("TIMESTAMP,Tokens\n2023-11-16 18:17:03.1,5\n")
    with pytest.raises(TraceError, match="needs columns"):
        load_trace(str(missing))
    bad_time = tmp_path / "time.csv"
    bad_time.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,5\n")
    with pytest.raises(TraceError, match="time.csv:2: bad TIMESTAMP"):
        load_trace(str(bad_time))


def test_unknown_names_formats_and_empty_selections_are_refused(tmp_path):
    with pytest.raises(TraceError, match="not a shipped trace"):
        load_trace("no-such-trace")
    other = tmp_path / "t.parquet"
    other.write_text("x")
    with pytest.raises(TraceError, match="unknown format"):
        load_trace(str(other))
    with pytest.raises(TraceError, match="no rows selected"):
        load_trace("mooncake-synth", start=10_000)
