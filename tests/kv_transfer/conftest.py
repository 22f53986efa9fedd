"""Fixtures for the KV-transfer tests: layouts, real stories260K KV, realistic synthetic KV."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.kv_export import KVLayout

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


@pytest.fixture(scope="session")
def stories_llm():
    """The real stories260K model (loads in ~0.1 s)."""
    from engine import LLM
    return LLM("stories260K", max_num_seqs=8)


@pytest.fixture(scope="session")
def stories_kv(stories_llm) -> tuple[torch.Tensor, KVLayout]:
    """Real prompt KV of stories260K for a 120-token story context, and its layout."""
    engine = stories_llm.engine
    prompt = " ".join(story_prompts()[:6])
    ids = stories_llm.tokenizer.encode(prompt)[:121]
    kv = prefill_kv(engine, ids)
    return kv, engine.kv_layout


def prefill_kv(engine, ids: list[int]) -> torch.Tensor:
    """KV of ``ids[:-1]`` computed by ``engine`` (a prefill-only request, exported and released)."""
    from engine import SamplingParams
    rid = f"kvt-prefill-{id(ids)}-{len(ids)}"
    engine.add_request(rid, ids, SamplingParams(temperature=0, max_tokens=64, ignore_eos=True),
                       prefill_only=True)
    for _ in range(1000):
        engine.step()
        try:
            seq = engine.export_kv(rid)
            break
        except ValueError:
            continue
    else:
        raise RuntimeError("prefill never parked")
    engine.release(rid)
    return seq.kv


@pytest.fixture
def small_layout() -> KVLayout:
    return KVLayout(num_layers=4, num_kv_heads=2, head_dim=16, dtype="float32", model_fingerprint="test-model-1")
