"""Turns a scheduled batch into tensors, runs the model, and moves KV in and out.

Owns the KV cache tensor ``[L, 2, num_blocks * block_size, Hkv, D]`` (slot-major so that a
token's cache slot is ``block * block_size + offset``).
"""
from __future__ import annotations

import torch

from engine.attention import AttentionGroup, AttentionMetadata
from engine.model import CausalLM
from engine.sequence import Sequence


class ModelRunner:
    def __init__(self, model: CausalLM, num_blocks: int, block_size: int,
                 dtype: torch.dtype, device: torch.device):
        cfg = model.cfg
        self.model = model
        self.block_size = block_size
        self.device = device
        self.kv_cache = torch.zeros(cfg.num_layers, 2, num_blocks * block_size, cfg.num_kv_heads,
                                    cfg.head_dim, dtype=dtype, device=device)

    # -- batch preparation -------------------------------------------------------------
    def _slots(self, seq: Sequence, start: int, end: int) -> torch.Tensor:
        pos = torch.arange(start, end)
        table = torch.tensor(seq.block_table, dtype=torch.long)
        return table[pos // self.block_size] * self.block_size + pos % self.block_size

    def _prepare(self, seqs: list[Sequence], num_new: list[int]):
        ids, positions, slots = [], [], []
        decode_rows, prefill_groups = [], []
        offset = 0
        for seq, n in zip(seqs, num_new):
            start = seq.num_computed
            ids.extend(seq.token_ids[start:start + n])
            positions.append(torch.arange(start, start + n))
            slots.append(self._slots(seq, start, start + n))
            if n == 1:
                decode_rows.append((offset, start + 1, seq))
            else:
                prefill_groups.append(self._prefill_group(seq, offset, start, n))
            offset += n
        groups = prefill_groups
        if decode_rows:
            groups.append(self._decode_group(decode_rows))
        dev = self.device
        meta = AttentionMetadata(torch.cat(slots).to(dev), groups)
        return (torch.tensor(ids, dtype=torch.long, device=dev), torch.cat(positions).to(dev), meta)

    def _prefill_group(self, seq: Sequence, offset: int, start: int, n: int) -> AttentionGroup:
        dev = self.device
        qi = torch.arange(offset, offset + n, device=dev).unsqueeze(0)
        keys = self._slots(seq, 0, start + n).to(dev).unsqueeze(0)
        mask = None
        if start > 0:
            q_pos = torch.arange(start, start + n, device=dev).unsqueeze(1)
            mask = (torch.arange(start + n, device=dev).unsqueeze(0) <= q_pos).view(1, 1, n, start + n)
        return AttentionGroup(qi, keys, mask, torch.ones_like(qi, dtype=torch.bool))

    def _decode_group(self, rows: list[tuple[int, int, Sequence]]) -> AttentionGroup:
        dev = self.device
        max_len = max(length for _, length, _ in rows)
        keys = torch.zeros(len(rows), max_len, dtype=torch.long)
        mask = torch.zeros(len(rows), 1, 1, max_len, dtype=torch.bool)
        for b, (_, length, seq) in enumerate(rows):
            keys[b, :length] = self._slots(seq, 0, length)
            mask[b, 0, 0, :length] = True
        qi = torch.tensor([[r[0]] for r in rows], device=dev)
        use_mask = None if len(rows) == 1 else mask.to(dev)
        return AttentionGroup(qi, keys.to(dev), use_mask, torch.ones_like(qi, dtype=torch.bool))

    # -- execution ---------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, seqs: list[Sequence], num_new: list[int], logit_rows: list[int],
            all_logits: bool = False) -> torch.Tensor:
        """Forward one step. Returns logits [len(logit_rows), V] for the last new token of
        each listed sequence index, or for every new token when ``all_logits``."""
        for seq in seqs:
            if seq.pending_prefix_kv is not None:
                self._write_prefix(seq)
        ids, positions, meta = self._prepare(seqs, num_new)
        hidden = self.model(ids, positions, self.kv_cache, meta)
        if all_logits:
            return self.model.logits(hidden)
        ends = torch.tensor(num_new).cumsum(0) - 1
        return self.model.logits(hidden[ends[logit_rows].to(self.device)])

    def _write_prefix(self, seq: Sequence) -> None:
        kv = seq.pending_prefix_kv
        start, end = seq.pending_prefix_start, int(kv.shape[2])
        slots = self._slots(seq, start, end).to(self.device)
        self.kv_cache.index_copy_(2, slots, kv[:, :, start:end].to(self.kv_cache.dtype).to(self.device))
        seq.pending_prefix_kv = None

    def read_kv(self, seq: Sequence, start: int, end: int) -> torch.Tensor:
        """KV of positions [start, end) as [L, 2, end-start, Hkv, D] on CPU."""
        slots = self._slots(seq, start, end).to(self.device)
        return self.kv_cache.index_select(2, slots).cpu()
