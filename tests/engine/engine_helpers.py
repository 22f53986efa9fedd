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


def assert_fp32_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to what fp32 promises when the same sum is computed in another order.

    Two paths to one result (chunked vs one-shot prefill, a prefix KV vs the full pass, paged vs
    contiguous attention, our model vs Hugging Face's) reduce in different orders, and MKL and
    oneDNN pick blockings, and ATen its vector width (AVX-512 or AVX2), by shape and CPU; so the
    order also differs between an Intel AMX host and an AMD Zen one. A reordered sum of K
    products moves by up to ~K ulp of the sum of their magnitudes (~sqrt(K) ulp typically),
    which is a few ulp of the largest values in the tensor, not of each result: a value near
    zero carries the rounding of its large terms. The absolute tolerance is therefore scaled to
    the tensor's magnitude (1e-5 of the largest |value|, ~84 ulp of it in fp32), plus 1e-4
    relative: tight enough that one wrong position, block or head is thousands of times over.

    Measured over tests/engine (worst use of the tolerance): 5% between two engine paths and
    18% for the engine against HF on the default path of an AMX host, about the same with
    ATen, oneDNN and MKL capped at AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2,
    MKL_ENABLE_INSTRUCTIONS=AVX2) and with one thread.
    """
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, atol=1e-5 * scale, rtol=1e-4)


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
