"""Parallel sampling (``n`` > 1): several requests that share one prompt prefill it once.

Requests added with the same ``fork_group`` (the router gives each sample of one client
request the same group and its own request id and seed) are forked from the first one,
the leader: while the leader's prompt is still being computed, a later sibling with the
same prompt, cache salt and sampling parameters (but for the seed) waits as its follower
instead of being scheduled. When the leader's prompt is complete, each follower gets the
leader's KV blocks (full blocks shared by reference count, the partly filled last block
copied: copy-on-write before its first own token lands in it) and samples its first token
from the same logits row with its own generator. From then on it is an ordinary sequence.

A sibling that arrives after the leader's prefill, or differs in anything but the seed,
is scheduled on its own (the prefix cache still serves its full blocks). A leader that
is aborted before its first token hands the group to its first follower.
"""
from __future__ import annotations

import dataclasses
import logging

from engine.block_pool import BlockPool
from engine.sequence import Sequence, SequenceStatus

logger = logging.getLogger(__name__)


def _same_but_seed(a, b) -> bool:
    return dataclasses.replace(a, seed=None) == dataclasses.replace(b, seed=None)


class ForkGroups:
    """The leaders still computing their prompt, by group, and their followers."""

    def __init__(self) -> None:
        self.leaders: dict[str, Sequence] = {}

    def attach(self, seq: Sequence) -> bool:
        """Make ``seq`` a follower of its group's leader; False (and ``seq`` becomes the
        leader when there is none) if it must be scheduled on its own."""
        if not seq.fork_group:
            return False
        leader = self.leaders.get(seq.fork_group)
        if leader is None:
            self.leaders[seq.fork_group] = seq
            return False
        if (leader.num_output_tokens or leader.prompt_len != seq.prompt_len
                or leader.token_ids != seq.token_ids or leader.cache_salt != seq.cache_salt
                or leader.prefill_only != seq.prefill_only
                or not _same_but_seed(leader.sampling, seq.sampling)):
            return False
        seq.leader = leader
        leader.followers.append(seq)
        return True

    def detach(self, seq: Sequence) -> Sequence | None:
        """Forget ``seq`` (aborted or finished). A follower leaves its leader; a leader with
        followers hands over to the first of them, which is returned to be scheduled."""
        if seq.leader is not None:
            seq.leader.followers.remove(seq)
            seq.leader = None
            return None
        if self.leaders.get(seq.fork_group) is not seq:
            return None
        del self.leaders[seq.fork_group]
        if not seq.followers:
            return None
        heir, rest = seq.followers[0], seq.followers[1:]
        seq.followers = []
        heir.leader, heir.followers = None, rest
        for f in rest:
            f.leader = heir
        self.leaders[heir.fork_group] = heir
        return heir

    def take_followers(self, leader: Sequence) -> list[Sequence]:
        """The followers to fork now that ``leader``'s prompt is computed (the group closes)."""
        if self.leaders.get(leader.fork_group) is leader:
            del self.leaders[leader.fork_group]
        out, leader.followers = leader.followers, []
        for f in out:
            f.leader = None
        return out


def fork_blocks(pool: BlockPool, leader: Sequence, follower: Sequence, copy_block) -> bool:
    """Give ``follower`` the leader's computed KV: full blocks by reference, the partly
    filled last block as a copy (``copy_block(src, dst)``). False if no block is free."""
    bs = pool.block_size
    full = leader.num_computed // bs
    partial = leader.num_computed % bs != 0
    if partial and pool.num_free < 1:
        return False
    shared = leader.block_table[:full]
    for block in shared:
        pool.share(block)
    table = list(shared)
    if partial:
        (dst,) = pool.allocate(1)
        copy_block(leader.block_table[full], dst)
        table.append(dst)
    follower.block_table = table
    follower.block_hashes = list(leader.block_hashes[:full])
    follower.hash_chain = list(leader.hash_chain)
    follower.num_computed = leader.num_computed
    follower.num_cached_tokens = follower.prompt_len      # none of it computed for this one
    follower.pending_prefix_kv = None
    follower.prompt_logprobs = list(leader.prompt_logprobs)
    follower.status = SequenceStatus.RUNNING
    return True
