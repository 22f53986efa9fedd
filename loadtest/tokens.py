"""Deterministic token-id prompts, so lengths are exact and prefix sharing is controlled.

Every block of tokens is named by ``(namespace, key)``: the same name always gives the
same tokens (for a given seed and vocabulary), different names give independent random
tokens. A Mooncake ``hash_id`` becomes the block ``("hash", id)``, so equal ids give equal
blocks and a shared prefix in the trace is a shared prefix on the wire.
"""
from __future__ import annotations

import zlib
from collections import OrderedDict

import numpy as np

from loadtest.errors import SpecError

# Ids below this are the special tokens of Llama-family vocabularies (unk, bos, eos).
DEFAULT_LOW_TOKEN = 3


class TokenSpace:
    """Random token blocks over ids ``[low, high)`` of a vocabulary.

    Args:
        vocab_size: the served model's vocabulary size.
        seed: the run's seed; a different seed gives different (still consistent) blocks.
        low, high: the id range to draw from (default: all but the first 3 ids).
        cache_blocks: how many blocks to keep memoised (hash blocks recur).
    """

    def __init__(self, vocab_size: int, seed: int = 0, low: int = DEFAULT_LOW_TOKEN,
                 high: int | None = None, cache_blocks: int = 4096) -> None:
        high = vocab_size if high is None else high
        if not 0 <= low < high <= vocab_size:
            raise SpecError(f"token range [{low}, {high}) must lie within a vocabulary of "
                            f"{vocab_size} ids and be non-empty")
        self.vocab_size = vocab_size
        self.seed = seed
        self.low, self.high = low, high
        self._cache: OrderedDict[tuple[str, int, int], list[int]] = OrderedDict()
        self._cache_blocks = cache_blocks

    def block(self, namespace: str, key: int, length: int) -> list[int]:
        """The ``length`` tokens named ``(namespace, key)``; a shorter length of the same
        name is a prefix of a longer one."""
        if length < 0:
            raise ValueError(f"block length must be >= 0, got {length}")
        name = (namespace, key, length)
        cached = self._cache.get(name)
        if cached is not None:
            self._cache.move_to_end(name)
            return cached
        ns = zlib.crc32(namespace.encode())
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, ns, key & 0xFFFFFFFFFFFF])
        tokens = rng.integers(self.low, self.high, size=length).tolist()
        self._cache[name] = tokens
        if len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return tokens

    def unique(self, key: int, length: int) -> list[int]:
        """Tokens that no other key shares (a request's own prompt)."""
        return self.block("unique", key, length)

    def describe(self) -> dict[str, object]:
        return {"vocab_size": self.vocab_size, "token_range": [self.low, self.high],
                "seed": self.seed}
