"""LMCache token database that speaks our key scheme instead of LMCache's own hashing.

LMCache's default chains CPython's builtin ``hash`` (or vLLM's when importable) and needs
``PYTHONHASHSEED`` discipline across processes. Ours uses ``tandem_common.hashing`` (blake2b,
deterministic everywhere) salted per namespace and tenant, so a native backend and the
router's prefix index compute the very same keys. The tenant salt travels through
LMCache's ``request_configs`` under ``SALT_CONFIG``.
"""
from __future__ import annotations

from collections.abc import Iterable

from kv_transfer.store.lmcache_env import force_telemetry_off

force_telemetry_off()

import torch  # noqa: E402

from lmcache.utils import CacheEngineKey  # noqa: E402
from lmcache.v1.token_database import TokenDatabase  # noqa: E402

from kv_transfer.store.keys import KeyScheme  # noqa: E402

SALT_CONFIG = "tandem.tenant_salt"


class TandemTokenDatabase(TokenDatabase):
    """Chunks tokens and names each full chunk with ``KeyScheme``'s chained hash."""

    def __init__(self, scheme: KeyScheme, kv_dtype: torch.dtype) -> None:
        # TokenDatabase.__init__ only picks LMCache's hash function, which we replace.
        self.scheme = scheme
        self.chunk_size = scheme.chunk_size
        self.kv_dtype = kv_dtype
        self.metadata = None
        self.save_only_first_rank = False

    def make_key(self, chunk_hash: bytes) -> CacheEngineKey:
        return CacheEngineKey(self.scheme.prefix, 1, 0, int.from_bytes(chunk_hash, "big"),
                              self.kv_dtype, None)

    def process_tokens(self, tokens=None, hashes=None, offsets=None, mask=None,
                       make_key: bool = True,
                       request_configs: dict | None = None) -> Iterable[tuple]:
        """Yield ``(start, end, key)`` for every full chunk not masked out."""
        num_skipped = 0 if mask is None else int(mask.numel() - mask.long().sum().item())
        if num_skipped % self.chunk_size:
            raise ValueError("masked-out prefix must be a whole number of chunks")
        if tokens is not None:
            token_list = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
            salt = (request_configs or {}).get(SALT_CONFIG, b"")
            for idx, chunk_hash in enumerate(self.scheme.chunk_hashes(token_list, salt)):
                start = idx * self.chunk_size
                if start < num_skipped:
                    continue
                key = self.make_key(chunk_hash) if make_key else int.from_bytes(chunk_hash, "big")
                yield start, start + self.chunk_size, key
        elif hashes is not None:
            if offsets is None:
                raise ValueError("hashes need offsets")
            start = 0
            for value, offset in zip(hashes, offsets, strict=True):
                key = (CacheEngineKey(self.scheme.prefix, 1, 0, value, self.kv_dtype, None)
                       if make_key else value)
                yield start, start + offset, key
                start += offset
        else:
            raise ValueError("either tokens or hashes must be given")
