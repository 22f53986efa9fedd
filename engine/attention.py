"""Attention over the paged KV cache.

New keys/values are scattered into their slots first; then every query attends to its
sequence's slots gathered through the block table. Decode rows (one query each) run as
one padded, masked batch; each prefill chunk runs on its own, so a long chunk never pads
the decode rows up to its length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(slots=True)
class AttentionGroup:
    """Queries of one or more sequences attended in one padded SDPA call."""
    query_index: torch.Tensor     # [B, Q] rows into the flat token batch (padded with 0)
    key_slots: torch.Tensor       # [B, K] cache slots of each sequence's context (padded with 0)
    mask: torch.Tensor | None     # [B, 1, Q, K] bool, True = may attend; None = full causal single seq
    query_valid: torch.Tensor     # [B, Q] bool


@dataclass(slots=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor    # [N] cache slot of each new token
    groups: list[AttentionGroup]


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """q: [N, Hq, D]; k, v: [N, Hkv, D]; caches: [num_slots, Hkv, D]. Returns [N, Hq, D]."""
    k_cache.index_copy_(0, meta.slot_mapping, k)
    v_cache.index_copy_(0, meta.slot_mapping, v)
    out = torch.empty_like(q)
    gqa = q.shape[1] != k.shape[1]
    for g in meta.groups:
        qg = q[g.query_index].transpose(1, 2)             # [B, Hq, Q, D]
        kg = k_cache[g.key_slots].transpose(1, 2)         # [B, Hkv, K, D]
        vg = v_cache[g.key_slots].transpose(1, 2)
        if g.mask is None:
            og = F.scaled_dot_product_attention(qg, kg, vg, is_causal=qg.shape[2] > 1,
                                                scale=scale, enable_gqa=gqa)
        else:
            og = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=g.mask, scale=scale,
                                                enable_gqa=gqa)
        og = og.transpose(1, 2)                           # [B, Q, Hq, D]
        out[g.query_index[g.query_valid]] = og[g.query_valid]
    return out
