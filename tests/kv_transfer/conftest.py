"""Fixtures for the KV-transfer tests: layouts and real stories260K KV."""
from __future__ import annotations

import pytest
import torch

from engine.kv_export import KVLayout
from tests.kv_transfer.samples import prefill_kv, story_prompts


@pytest.fixture(scope="session")
def stories_llm():
    """The real stories260K model (loads in ~0.1 s)."""
    from engine import LLM
    before = torch.get_num_threads()
    llm = LLM("stories260K", max_num_seqs=8, num_threads=1)
    torch.set_num_threads(before)       # the engine sets it process-wide; other tests keep theirs
    return llm


@pytest.fixture(scope="session")
def stories_kv(stories_llm) -> tuple[torch.Tensor, KVLayout]:
    """Real prompt KV of stories260K for a 120-token story context, and its layout."""
    engine = stories_llm.engine
    ids = stories_llm.tokenizer.encode(" ".join(story_prompts()[:6]))[:121]
    return prefill_kv(engine, ids), engine.kv_layout


@pytest.fixture
def small_layout() -> KVLayout:
    return KVLayout(num_layers=4, num_kv_heads=2, head_dim=16, dtype="float32", model_fingerprint="test-model-1")
