"""Chained chunk hashes: full chunks only, chained, salted, identical in every process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tandem_common.hashing import DIGEST_SIZE, chunk_hashes

ROOT = Path(__file__).resolve().parents[2]
TOKENS = list(range(1, 50))


def test_only_full_chunks_are_hashed():
    hashes = chunk_hashes(TOKENS, 16)
    assert len(hashes) == 3 and all(len(h) == DIGEST_SIZE for h in hashes)
    assert chunk_hashes(TOKENS[:15], 16) == []


def test_hashes_are_chained_on_the_whole_prefix():
    base = chunk_hashes(TOKENS, 16)
    changed_first = chunk_hashes([99] + TOKENS[1:], 16)
    assert all(a != b for a, b in zip(base, changed_first))
    changed_last = chunk_hashes(TOKENS[:47] + [99, 99], 16)
    assert changed_last[:2] == base[:2] and changed_last[2] != base[2]


def test_salt_separates_namespaces():
    assert chunk_hashes(TOKENS, 16, salt=b"a") != chunk_hashes(TOKENS, 16, salt=b"b")
    assert chunk_hashes(TOKENS, 16) == chunk_hashes(TOKENS, 16, salt=b"")


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_hashes(TOKENS, 0)


def test_hashes_are_identical_across_processes_and_hash_seeds():
    code = ("from tandem_common.hashing import chunk_hashes; "
            f"print(b''.join(chunk_hashes({TOKENS!r}, 8, salt=b's')).hex())")
    outs = set()
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                             text=True, check=True, timeout=60)
        outs.add(res.stdout.strip())
    assert outs == {b"".join(chunk_hashes(TOKENS, 8, salt=b"s")).hex()}
