"""Helpers shared by the engine tests (a module, not conftest, so imports are unambiguous)."""
from __future__ import annotations

import torch

from engine import SamplingParams

# The README's reference: greedy decoding from BOS alone.
STORIES_REFERENCE = ("Once upon a time, there was a little girl named Lily. She loved to play outside "
                     "in the park. One day, she saw a big, red ball.")

FAMILIES = {
    "llama-gqa": ("tiny-llama-gqa", {}),                               # untied, 8 q / 2 kv heads
    "llama-gqa-tied": ("tiny-llama-gqa", {"tie_word_embeddings": True}),
    "llama3-rope": ("tiny-llama3", {}),                                # llama3 RoPE scaling
    "qwen2-bias": ("tiny-qwen2", {}),                                  # qkv bias, tied
    "mistral": ("tiny-mistral", {}),                                   # MQA (1 kv head)
}


def greedy(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def hf_greedy(hf, prompt: list[int], n: int) -> list[int]:
    """HF greedy decoding through its own KV cache, EOS ignored."""
    ids = torch.tensor([prompt])
    out: list[int] = []
    past = None
    with torch.no_grad():
        for _ in range(n):
            res = hf(ids, past_key_values=past, use_cache=True)
            past = res.past_key_values
            tok = int(res.logits[0, -1].argmax())
            out.append(tok)
            ids = torch.tensor([[tok]])
    return out


def run_to_completion(engine, limit: int = 100_000) -> dict:
    """Step ``engine`` until idle; request id -> final RequestOutput."""
    final = {}
    for _ in range(limit):
        if not engine.has_unfinished():
            return final
        for out in engine.step():
            if out.finished:
                final[out.request_id] = out
    raise AssertionError("engine did not finish")
