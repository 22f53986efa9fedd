"""Paged KV block bookkeeping: allocation, reference counts, prefix-cache index.

No torch here. A block is either in use (ref_count > 0) or free. Free blocks that hold a
full, hashed chunk stay findable by hash until they are reused, so a prefix computed by a
finished request can still be shared: they sit at the back of the free queue and are
reused last. ``num_free`` counts every block with no user, cached or not, so after all
requests end it returns exactly to its starting value.
"""
from __future__ import annotations

from collections import OrderedDict

from engine.errors import OutOfKVBlocksError


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_count = [0] * num_blocks
        self.block_hash: list[bytes | None] = [None] * num_blocks
        self.by_hash: dict[bytes, int] = {}
        # Front: reused first (blocks with no cached content), back: cached blocks, LRU order.
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int = 1) -> list[int]:
        if n > len(self._free):
            raise OutOfKVBlocksError(f"need {n} KV blocks, {len(self._free)} free")
        out = []
        for _ in range(n):
            block, _ = self._free.popitem(last=False)
            self._forget(block)
            self.ref_count[block] = 1
            out.append(block)
        return out

    def free(self, blocks: list[int]) -> None:
        # Reverse order: a sequence's tail blocks are the least likely to be shared again,
        # so they are evicted before its head blocks.
        for block in reversed(blocks):
            if self.ref_count[block] <= 0:
                raise RuntimeError(f"double free of KV block {block}")
            self.ref_count[block] -= 1
            if self.ref_count[block] == 0:
                self._free[block] = None
                if self.block_hash[block] is None:
                    self._free.move_to_end(block, last=False)

    def lookup(self, chain_hash: bytes) -> int | None:
        return self.by_hash.get(chain_hash)

    def share(self, block: int) -> None:
        """Take a reference on a cached block found by ``lookup``."""
        if self.ref_count[block] == 0:
            del self._free[block]
        self.ref_count[block] += 1

    def register(self, block: int, chain_hash: bytes) -> None:
        """Publish a full block under its chain hash (first writer wins)."""
        if self.block_hash[block] is not None or chain_hash in self.by_hash:
            return
        self.block_hash[block] = chain_hash
        self.by_hash[chain_hash] = block

    def _forget(self, block: int) -> None:
        h = self.block_hash[block]
        if h is not None:
            self.block_hash[block] = None
            if self.by_hash.get(h) == block:
                del self.by_hash[h]
