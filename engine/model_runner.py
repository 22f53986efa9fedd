"""Turns a scheduled batch into tensors, runs the model, and moves KV in and out.

Owns the KV cache tensor ``[L, 2, num_blocks * block_size, Hkv, D]`` (slot-major so that a
token's cache slot is ``block * block_size + offset``).

The flat token batch puts every decode row (one new token) first, in one span, then each
prefill chunk; logits come back in the caller's sequence order. Per-step metadata is built
once here and shared by all layers, with as few small tensors as possible: at batch 1 the
model is memory-bound and each extra tiny op is time not spent streaming weights.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from engine import cpu_kernels, prefault
from engine.attention import AttentionMetadata, AttentionSpan
from engine.model import CausalLM
from engine.sequence import Sequence


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros; on CPU from calloc (numpy), so allocating a large KV reservation is instant
    (``torch.zeros`` writes every page first); ``engine.prefault`` then maps its pages in the
    background."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    width = torch.empty((), dtype=dtype).element_size()
    raw = np.zeros(shape, dtype={1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}[width])
    return torch.from_numpy(raw).view(dtype)


class ModelRunner:
    def __init__(self, model: CausalLM, num_blocks: int, block_size: int,
                 dtype: torch.dtype, device: torch.device, matmul_dtype: str | None = None):
        cfg = model.cfg
        self.model = model
        self.block_size = block_size
        self.device = device
        self.kv_cache = _zeros((cfg.num_layers, 2, num_blocks * block_size, cfg.num_kv_heads,
                                cfg.head_dim), dtype, device)
        prefault.start(self.kv_cache)      # CPU: its pages mapped in the background
        model.select_kernels(matmul_dtype)
        # Decode rows read the paged cache in place through the native kernel where it runs
        # (CPU, float32, head_dim a multiple of its 8-wide vectors).
        self.native_decode = device.type == "cpu" and dtype == torch.float32 and \
            cfg.head_dim % 8 == 0 and cpu_kernels.available()
        # Prefill chunks likewise, unless bf16 AMX runs their attention.
        self.native_prefill = self.native_decode and self.model.matmul.mode != "bf16-amx"

    # -- batch preparation -------------------------------------------------------------
    def _slots(self, seq: Sequence, start: int, end: int) -> torch.Tensor:
        pos = torch.arange(start, end)
        table = torch.tensor(seq.block_table, dtype=torch.long)
        return table[pos // self.block_size] * self.block_size + pos % self.block_size

    def _prepare(self, seqs: list[Sequence], num_new: list[int]):
        """Flat inputs, attention metadata, and the row of each sequence's last new token."""
        bs, dev = self.block_size, self.device
        decode = [i for i, n in enumerate(num_new) if n == 1]
        prefill = [i for i, n in enumerate(num_new) if n != 1]
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        last_row = [0] * len(seqs)
        spans: list[AttentionSpan] = []
        for i in decode:
            seq = seqs[i]
            pos = seq.num_computed
            last_row[i] = len(ids)
            ids.append(seq.token_ids[pos])
            positions.append(pos)
            slots.append(seq.block_table[pos // bs] * bs + pos % bs)
        if decode:
            spans.append(self._decode_span([seqs[i] for i in decode]))
        pos_tensors = [torch.tensor(positions, dtype=torch.long)] if positions else []
        slot_tensors = [torch.tensor(slots, dtype=torch.long)] if slots else []
        for i in prefill:
            seq, n = seqs[i], num_new[i]
            start, row = seq.num_computed, len(ids)
            ids.extend(seq.token_ids[start:start + n])
            pos_tensors.append(torch.arange(start, start + n))
            slot_tensors.append(self._slots(seq, start, start + n))
            spans.append(self._prefill_span(seq, row, start, n))
            last_row[i] = row + n - 1
        meta = AttentionMetadata(torch.cat(slot_tensors).to(dev), spans, bs,
                                 bf16_prefill=self.model.matmul.mode == "bf16-amx")
        return (torch.tensor(ids, dtype=torch.long, device=dev), torch.cat(pos_tensors).to(dev),
                meta, last_row)

    def _prefill_span(self, seq: Sequence, row: int, start: int, n: int) -> AttentionSpan:
        dev = self.device
        kv_len = start + n
        span = AttentionSpan(row, row + n, 1, n, kv_len, None, causal=start == 0,
                             native_prefill=self.native_prefill)
        self._locate_keys(span, [seq.block_table], kv_len)
        if start > 0 and not span.native_prefill:
            q_pos = torch.arange(start, kv_len, device=dev).unsqueeze(1)
            span.mask = (torch.arange(kv_len, device=dev).unsqueeze(0) <= q_pos).view(1, 1, n, kv_len)
        return span

    def _decode_span(self, seqs: list[Sequence]) -> AttentionSpan:
        lengths = [s.num_computed + 1 for s in seqs]
        kv_len = max(lengths)
        span = AttentionSpan(0, len(seqs), len(seqs), 1, kv_len, None)
        if self.native_decode:
            num_blocks = -(-kv_len // self.block_size)
            span.block_tables = torch.tensor([s.block_table[:num_blocks] + [0] * (num_blocks - min(
                len(s.block_table), num_blocks)) for s in seqs], dtype=torch.long)
            span.seq_lens = torch.tensor(lengths, dtype=torch.long)
            return span
        self._locate_keys(span, [s.block_table for s in seqs], kv_len)
        if min(lengths) != kv_len:
            lens = torch.tensor(lengths, device=self.device)
            span.mask = (torch.arange(kv_len, device=self.device) < lens.unsqueeze(1)).view(
                len(seqs), 1, 1, kv_len)
        return span

    def _locate_keys(self, span: AttentionSpan, tables: list[list[int]], kv_len: int) -> None:
        """A plain cache slice when one sequence's blocks are consecutive, else block tables."""
        num_blocks = -(-kv_len // self.block_size)
        if len(tables) == 1:
            used = tables[0][:num_blocks]
            if used[-1] - used[0] == num_blocks - 1 and all(b - a == 1 for a, b in zip(used, used[1:])):
                span.slot_start = used[0] * self.block_size
                return
        padded = [t[:num_blocks] + [0] * (num_blocks - min(len(t), num_blocks)) for t in tables]
        span.block_tables = torch.tensor(padded, dtype=torch.long, device=self.device)

    # -- execution ---------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, seqs: list[Sequence], num_new: list[int], logit_rows: list[int],
            every_row_of: Iterable[int] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Forward one step: (logits [len(logit_rows), V] of the last new token of each listed
        sequence index, {index: logits of every new token} for the sequences in
        ``every_row_of``; empty when none are)."""
        hidden, last_row = self._forward(seqs, num_new)
        every = {i: self.model.logits(hidden[last_row[i] - num_new[i] + 1:last_row[i] + 1])
                 for i in every_row_of}
        rows = [last_row[i] for i in logit_rows]
        if rows != list(range(hidden.shape[0])):
            hidden = hidden[torch.tensor(rows, dtype=torch.long, device=self.device)]
        return self.model.logits(hidden), every

    @torch.inference_mode()
    def all_logits(self, seq: Sequence, num_new: int) -> torch.Tensor:
        """Forward one sequence's ``num_new`` tokens: logits of every one, [num_new, V]."""
        hidden, _ = self._forward([seq], [num_new])
        return self.model.logits(hidden)

    def _forward(self, seqs: list[Sequence], num_new: list[int]) -> tuple[torch.Tensor, list[int]]:
        for seq in seqs:
            if seq.pending_prefix_kv is not None:
                self._write_prefix(seq)
        ids, positions, meta, last_row = self._prepare(seqs, num_new)
        return self.model(ids, positions, self.kv_cache, meta), last_row

    def _write_prefix(self, seq: Sequence) -> None:
        kv = seq.pending_prefix_kv
        start, end = seq.pending_prefix_start, int(kv.shape[2])
        slots = self._slots(seq, start, end).to(self.device)
        self.kv_cache.index_copy_(2, slots, kv[:, :, start:end].to(self.kv_cache.dtype).to(self.device))
        seq.pending_prefix_kv = None

    def copy_block(self, src: int, dst: int) -> None:
        """Copy one KV block's contents (copy-on-write of a shared, partly filled block)."""
        bs = self.block_size
        self.kv_cache[:, :, dst * bs:(dst + 1) * bs].copy_(self.kv_cache[:, :, src * bs:(src + 1) * bs])

    def read_kv(self, seq: Sequence, start: int, end: int) -> torch.Tensor:
        """KV of positions [start, end) as [L, 2, end-start, Hkv, D] on CPU."""
        slots = self._slots(seq, start, end).to(self.device)
        return self.kv_cache.index_select(2, slots).cpu()
