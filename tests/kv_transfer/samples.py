"""Test data for the KV-transfer tests (importable by Ray workers too: no pytest here)."""
from __future__ import annotations

from pathlib import Path

import torch

PROMPTS_FILE = Path(__file__).with_name("story_prompts.txt")


def story_prompts() -> list[str]:
    """The 50 story openings used by the quality tests."""
    return [line.strip() for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]


def synthetic_kv(layers: int = 4, tokens: int = 64, heads: int = 2, head_dim: int = 16,
                 dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """KV with real KV's traits: keys with a few large outlier channels and a big first
    (attention-sink) token, values roughly uniform across channels."""
    g = torch.Generator().manual_seed(seed)
    kv = torch.randn(layers, 2, tokens, heads, head_dim, generator=g)
    channel_scale = 1 + 6 * (torch.rand(layers, 1, heads, head_dim, generator=g) > 0.85)
    kv[:, 0] *= channel_scale
    kv[:, 0, :1] *= 4
    kv[:, 1] *= 0.4
    return kv.to(dtype)


def prefill_kv(engine, ids: list[int]) -> torch.Tensor:
    """KV of ``ids[:-1]`` computed by ``engine`` (a prefill-only request, exported and released)."""
    return prefill_sequence(engine, ids).kv


def prefill_sequence(engine, ids: list[int], request_id: str | None = None, sampling=None):
    """Run ``ids`` as a prefill-only request in ``engine``; returns its exported ``SequenceKV``
    (prompt KV, and the first sampled token appended) after releasing it."""
    from kv_transfer.codecs.quality import prefill_export
    rid = request_id or f"kvt-prefill-{len(ids)}-{hash(tuple(ids)) & 0xffffff}"
    return prefill_export(engine, ids, rid, sampling)
