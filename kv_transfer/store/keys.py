"""Our key scheme for stored KV chunks.

A chunk's key is the chained content hash of every token up to the end of that chunk
(``tandem_common.hashing.chunk_hashes``), salted with a namespace built from the model
fingerprint, the KV dtype, the codec and the tenant salt. Equal keys therefore mean the
same tokens, the same model, the same value encoding and the same tenant; anything else
can never hit. The string form is the one LMCache's ``CacheEngineKey.to_string`` prints
for the same hash, so the LMCache engine and a native backend address the same entries.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from tandem_common.hashing import chunk_hashes
from engine.kv_export import KVLayout

SHARED_TENANT = b"*shared*"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
# LMCache spells dtypes this way in its key strings; we keep its spelling so both match.
_KEY_DTYPE = {"float32": "float", "float16": "half", "bfloat16": "bfloat16", "float64": "double"}


def tenant_bytes(salt: bytes | str | None) -> bytes:
    """Normalise a tenant salt; ``None`` and ``""`` are the default tenant."""
    if salt is None:
        return b""
    if isinstance(salt, str):
        return salt.encode("utf-8")
    if isinstance(salt, (bytes, bytearray, memoryview)):
        return bytes(salt)
    raise ValueError(f"tenant salt must be bytes, str or None, got {type(salt).__name__}")


class KeyScheme:
    """Keys of one store: fixed model, dtype, codec and chunk size; salt per call."""

    def __init__(self, layout: KVLayout, codec: str, chunk_size: int,
                 share_tenants: bool = False, key_prefix: str = "tandem") -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if not layout.model_fingerprint:
            raise ValueError("layout.model_fingerprint must be set: it isolates models")
        self.layout = layout
        self.codec = codec
        self.chunk_size = chunk_size
        self.share_tenants = share_tenants
        # Readable part of every key; the hash below is what actually isolates.
        fp = _UNSAFE.sub("_", layout.model_fingerprint)[:16]
        self.prefix = f"{_UNSAFE.sub('_', key_prefix)}.{fp}.{_UNSAFE.sub('_', codec)}"
        if layout.dtype not in _KEY_DTYPE:
            raise ValueError(f"unsupported KV dtype {layout.dtype!r}; one of {sorted(_KEY_DTYPE)}")
        self.key_dtype = _KEY_DTYPE[layout.dtype]

    def namespace_salt(self, tenant: bytes | str | None) -> bytes:
        """The salt that chains into every chunk hash of this namespace."""
        who = SHARED_TENANT if self.share_tenants else tenant_bytes(tenant)
        digest = hashlib.blake2b(digest_size=16, person=b"tandem-store-ns")
        for part in (self.layout.model_fingerprint.encode(), self.layout.dtype.encode(),
                     self.codec.encode(), str(self.chunk_size).encode(), who):
            digest.update(len(part).to_bytes(4, "little"))
            digest.update(part)
        return digest.digest()

    def chunk_hashes(self, token_ids: Sequence[int], tenant: bytes | str | None) -> list[bytes]:
        """Chained 16-byte hashes of every full chunk of ``token_ids``."""
        return chunk_hashes(list(token_ids), self.chunk_size, salt=self.namespace_salt(tenant))

    def key_for_hash(self, chunk_hash: bytes | int) -> str:
        """The Redis key of one chunk (LMCache's ``CacheEngineKey`` string form)."""
        value = int.from_bytes(chunk_hash, "big") if isinstance(chunk_hash, bytes) else chunk_hash
        return f"{self.prefix}@1@0@{value:x}@{self.key_dtype}"

    def chunk_keys(self, token_ids: Sequence[int], tenant: bytes | str | None) -> list[str]:
        """Redis keys of every full chunk, in prefix order."""
        return [self.key_for_hash(h) for h in self.chunk_hashes(token_ids, tenant)]

    def full_chunk_tokens(self, num_tokens: int) -> int:
        """``num_tokens`` rounded down to whole chunks."""
        return (max(0, num_tokens) // self.chunk_size) * self.chunk_size
