"""BlockPool bookkeeping: reference counts, the prefix index, eviction order."""
from __future__ import annotations

import pytest

from engine.block_pool import BlockPool
from engine.errors import OutOfKVBlocksError


def test_allocate_and_free_return_to_the_start():
    pool = BlockPool(8, 16)
    blocks = pool.allocate(5)
    assert len(set(blocks)) == 5 and pool.num_free == 3
    pool.free(blocks)
    assert pool.num_free == 8 and pool.ref_count == [0] * 8


def test_allocating_more_than_free_raises_and_changes_nothing():
    pool = BlockPool(4, 16)
    pool.allocate(3)
    with pytest.raises(OutOfKVBlocksError, match="need 2"):
        pool.allocate(2)
    assert pool.num_free == 1


def test_double_free_is_an_error():
    pool = BlockPool(4, 16)
    (b,) = pool.allocate(1)
    pool.free([b])
    with pytest.raises(RuntimeError, match="double free"):
        pool.free([b])


def test_a_shared_block_is_freed_only_by_its_last_user():
    pool = BlockPool(4, 16)
    (b,) = pool.allocate(1)
    pool.register(b, b"h" * 16)
    assert pool.lookup(b"h" * 16) == b
    pool.share(b)
    pool.free([b])
    assert pool.num_free == 3 and pool.ref_count[b] == 1
    pool.free([b])
    assert pool.num_free == 4


def test_a_freed_cached_block_stays_findable_until_reused_and_is_reused_last():
    pool = BlockPool(3, 16)
    a, b, c = pool.allocate(3)
    pool.register(a, b"A" * 16)
    pool.free([a, b, c])
    assert pool.lookup(b"A" * 16) == a
    pool.share(a)                                   # revived from the free queue
    assert pool.num_free == 2 and pool.ref_count[a] == 1
    pool.free([a])
    got = pool.allocate(2)
    assert a not in got                             # uncached blocks go first
    assert pool.lookup(b"A" * 16) == a
    assert pool.allocate(1) == [a]                  # now evicted ...
    assert pool.lookup(b"A" * 16) is None           # ... and forgotten


def test_register_first_writer_wins():
    pool = BlockPool(2, 16)
    a, b = pool.allocate(2)
    pool.register(a, b"X" * 16)
    pool.register(b, b"X" * 16)
    assert pool.lookup(b"X" * 16) == a and pool.block_hash[b] is None


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        BlockPool(0, 16)
    with pytest.raises(ValueError):
        BlockPool(4, 0)
