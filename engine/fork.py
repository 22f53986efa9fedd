"""Parallel sampling (``n`` > 1): several requests that share one prompt prefill it once.

Requests added with the same ``fork_group`` (the router gives each sample of one client
request the same group and its own request id and seed) are forked from the first one,
the leader: while the leader's prompt is still being computed, a later sibling with the
same prompt, cache salt and sampling parameters (but for the seed) waits as its follower
instead of being scheduled. When the leader's prompt is complete, each follower gets the
leader's KV blocks (full blocks shared by reference count, the partly filled last block
copied: copy-on-write before its first own token lands in it) and samples its first token
from the same logits row with its own generator. From then on it is an ordinary sequence.

The samples reach the engine one by one (each is its own request to the worker), so a
leader that knows its group's size (``fork_size``) is held back from scheduling until every
sibling has joined, or for at most ``FORK_WAIT_S`` (a sibling refused or cancelled on its
way must not stall the others). A sibling that arrives after the leader's prefill, or
differs in anything but the seed, is scheduled on its own (the prefix cache still serves
its full blocks). A leader aborted before its first token hands the group to its first
follower.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict

from engine.block_pool import BlockPool
from engine.sequence import Sequence, SequenceStatus

logger = logging.getLogger(__name__)

FORK_WAIT_S = 0.05        # longest a leader waits for its siblings before computing its prompt
_CLOSED_KEPT = 4096       # closed groups remembered for samples still to come


def _same_but_seed(a, b) -> bool:
    return dataclasses.replace(a, seed=None) == dataclasses.replace(b, seed=None)


class ForkGroups:
    """The leaders still computing their prompt, by group, and their followers."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.leaders: dict[str, Sequence] = {}
        self.held: dict[str, float] = {}                 # group -> when its held leader is due
        # Groups whose prompt is computed, and how many samples may still come: those are
        # scheduled at once (nothing is left to share), not held as a new leader.
        self.closed: OrderedDict[str, int] = OrderedDict()

    def add(self, seq: Sequence) -> Sequence | None:
        """Take in a new request: the sequence to schedule now (``seq`` itself, or a held leader
        whose group is now complete), or None while it waits (a follower, or a held leader)."""
        if not seq.fork_group:
            return seq
        if seq.fork_group in self.closed:
            self._arrived_late(seq.fork_group)
            return seq
        leader = self.leaders.get(seq.fork_group)
        if leader is None:
            self.leaders[seq.fork_group] = seq
            if seq.fork_size <= 1:
                return seq
            self.held[seq.fork_group] = self.clock() + FORK_WAIT_S
            return None
        if not self._attach(leader, seq):
            return seq
        complete = 1 + len(leader.followers) >= leader.fork_size
        if complete and self.held.pop(leader.fork_group, None) is not None:
            return leader
        return None

    def due(self) -> list[Sequence]:
        """Held leaders whose wait is over (each then computes for those that joined)."""
        now = self.clock()
        out = [self.leaders[g] for g, until in self.held.items() if until <= now]
        for seq in out:
            del self.held[seq.fork_group]
        return out

    def wait_s(self) -> float | None:
        """Seconds until the next held leader is due; None when none is held."""
        if not self.held:
            return None
        return max(0.0, min(self.held.values()) - self.clock())

    def _arrived_late(self, group: str) -> None:
        left = self.closed.pop(group) - 1
        if left > 0:
            self.closed[group] = left

    def _attach(self, leader: Sequence, seq: Sequence) -> bool:
        if (leader.num_output_tokens or leader.token_ids != seq.token_ids or leader.cache_salt != seq.cache_salt
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
        self.held.pop(seq.fork_group, None)      # the heir computes at once
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
        """The followers to fork now that ``leader``'s prompt is computed (the group closes;
        samples of it still to come are then scheduled at once, not held)."""
        if self.leaders.get(leader.fork_group) is leader:
            del self.leaders[leader.fork_group]
            missing = leader.fork_size - 1 - len(leader.followers)
            if missing > 0:
                self.closed[leader.fork_group] = missing
                while len(self.closed) > _CLOSED_KEPT:
                    self.closed.popitem(last=False)
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
