"""Chained content hashes over token chunks.

Deterministic across processes and machines: blake2b over little-endian int32 token
bytes, keyed by a fixed seed and an optional namespace salt. No PYTHONHASHSEED, no
builtin ``hash``. The same function serves the engine's block pool (chunk = block size),
the global store (chunk = store chunk size) and the router's prefix index.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

HASH_SEED = b"tandem-kv-v1"
DIGEST_SIZE = 16
ROOT_HASH = bytes(DIGEST_SIZE)


def hash_chunk(parent: bytes, tokens: Sequence[int], salt: bytes = b"") -> bytes:
    """Hash one chunk of tokens chained onto its parent chunk's hash."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE, key=HASH_SEED, person=b"tandem-chunk")
    h.update(parent)
    h.update(struct.pack("<I", len(salt)))
    h.update(salt)
    h.update(struct.pack(f"<{len(tokens)}i", *tokens))
    return h.digest()


def chunk_hashes(tokens: Sequence[int], chunk_size: int, salt: bytes = b"") -> list[bytes]:
    """Chained hashes of every *full* chunk of ``tokens``; a trailing partial chunk has none."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out: list[bytes] = []
    parent = ROOT_HASH
    for start in range(0, len(tokens) - chunk_size + 1, chunk_size):
        parent = hash_chunk(parent, tokens[start:start + chunk_size], salt)
        out.append(parent)
    return out
