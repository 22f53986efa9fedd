"""Continuous batching with chunked prefill.

Each step spends a token budget: first one token for every decoding sequence (so TPOT
holds under load), then prompt chunks for sequences still prefilling, then new arrivals
while there is room. A sequence that cannot get a KV block preempts the newest running
sequence, which goes back to the queue and later recomputes (its prefix blocks are
usually still cached).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from engine.block_pool import BlockPool
from tandem_common.hashing import ROOT_HASH, hash_chunk
from engine.sequence import Sequence, SequenceStatus

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ScheduledBatch:
    seqs: list[Sequence]
    num_new: list[int]          # tokens computed this step, per sequence

    def __bool__(self) -> bool:
        return bool(self.seqs)


class Scheduler:
    def __init__(self, pool: BlockPool, max_num_seqs: int, max_num_batched_tokens: int,
                 enable_prefix_caching: bool = True):
        self.pool = pool
        self.block_size = pool.block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.enable_prefix_caching = enable_prefix_caching
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        batch = ScheduledBatch([], [])
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue   # preempted earlier in this loop
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._reserve(seq, seq.num_computed + n, batch):
                continue
            batch.seqs.append(seq)
            batch.num_new.append(n)
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not self._admit(seq):
                break
            self.waiting.popleft()
            self.running.append(seq)
            seq.status = SequenceStatus.RUNNING
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._reserve(seq, seq.num_computed + n, batch):
                break
            batch.seqs.append(seq)
            batch.num_new.append(n)
            budget -= n
        return batch

    def _admit(self, seq: Sequence) -> bool:
        """Attach cached prefix blocks and blocks for any given prefix KV; False if no room."""
        hits: list[int] = []
        hashes: list[bytes] = []
        # Prompt logprobs need every prompt position computed: no cached prefix (vLLM does the same).
        if self.enable_prefix_caching and seq.sampling.prompt_logprobs is None:
            n = (seq.num_tokens - 1) // self.block_size
            for h in self._hash_chain(seq, n)[:n]:
                block = self.pool.lookup(h)
                if block is None:
                    break
                hits.append(block)
                hashes.append(h)
        hit_tokens = len(hits) * self.block_size
        given = 0 if seq.pending_prefix_kv is None else int(seq.pending_prefix_kv.shape[2])
        computed = max(hit_tokens, given)
        need = -(-computed // self.block_size) - len(hits)
        # Keep one block of headroom per running sequence so admissions do not thrash.
        if need + 1 > self.pool.num_free - len(self.running):
            return False
        for block in hits:
            self.pool.share(block)
        seq.block_table = hits + self.pool.allocate(need)
        seq.block_hashes = hashes
        seq.num_computed = computed
        seq.num_cached_tokens = computed if seq.num_output_tokens == 0 else seq.num_cached_tokens
        seq.pending_prefix_start = hit_tokens
        if given <= hit_tokens:
            seq.pending_prefix_kv = None
        return True

    def _reserve(self, seq: Sequence, upto: int, batch: ScheduledBatch) -> bool:
        """Ensure blocks for positions < upto, preempting newer sequences if needed."""
        need = -(-upto // self.block_size) - len(seq.block_table)
        while need > self.pool.num_free:
            victim = self._pick_victim(seq, batch)
            if victim is None:
                return False
            self.preempt(victim)
        if need > 0:
            seq.block_table += self.pool.allocate(need)
        return True

    def _pick_victim(self, seq: Sequence, batch: ScheduledBatch) -> Sequence | None:
        for cand in reversed(self.running):
            if cand is not seq and cand not in batch.seqs:
                return cand
        return None

    def preempt(self, seq: Sequence) -> None:
        logger.debug("preempting %s to free %d blocks", seq.request_id, len(seq.block_table))
        self.running.remove(seq)
        self.release_blocks(seq)
        seq.num_computed = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def release_blocks(self, seq: Sequence) -> None:
        if seq.block_table:
            self.pool.free(seq.block_table)
        seq.block_table = []
        seq.block_hashes = []

    def publish_full_blocks(self, seq: Sequence) -> None:
        """Register newly completed blocks in the prefix index (chained hashes)."""
        if not self.enable_prefix_caching:
            return
        full = seq.num_computed // self.block_size
        if len(seq.block_hashes) >= full:
            return
        chain = self._hash_chain(seq, full)
        for i in range(len(seq.block_hashes), full):
            self.pool.register(seq.block_table[i], chain[i])
            seq.block_hashes.append(chain[i])

    def _hash_chain(self, seq: Sequence, num_blocks: int) -> list[bytes]:
        """``seq``'s chain of full-block hashes, at least ``num_blocks`` long; each computed once
        per sequence (tokens are append-only, so a block's hash never changes): a sequence
        waiting for room is not re-hashed at every step."""
        chain, bs = seq.hash_chain, self.block_size
        while len(chain) < num_blocks:
            i = len(chain)
            chain.append(hash_chunk(chain[-1] if chain else ROOT_HASH, seq.token_ids[i * bs:(i + 1) * bs],
                                    seq.cache_salt))
        return chain

    def remove(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.release_blocks(seq)
