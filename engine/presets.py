"""Named random-weight model shapes for speed and scale work.

Real weights that large cannot be downloaded here, so benchmarks use seeded random
weights of realistic shape: same loader, same code path, real compute. The tiny presets
exist for exactness tests of each supported family.
"""
from __future__ import annotations

from typing import Any

_BASE: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": False, "torch_dtype": "float32", "initializer_range": 0.02,
}


def _cfg(**kw: Any) -> dict[str, Any]:
    return {**_BASE, **kw}


PRESETS: dict[str, dict[str, Any]] = {
    # ~100M parameters: the benchmark model of the issues.
    "llama-100m": _cfg(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                       num_attention_heads=12, num_key_value_heads=4, vocab_size=32000,
                       max_position_embeddings=8192, tie_word_embeddings=True),
    # ~7.9M parameters: a 1,000-token prefill takes ~140 ms on one idle CPU thread here (the
    # order of 100 ms), the model of benchmarks/disagg_vs_colocated.py (small vocabulary
    # keeps memory low).
    "llama-8m": _cfg(hidden_size=384, intermediate_size=1024, num_hidden_layers=4,
                     num_attention_heads=6, num_key_value_heads=2, vocab_size=4096,
                     max_position_embeddings=2048, tie_word_embeddings=True),
    # 9.84M parameters (the name follows the peer notes' make_llama20m.py): the model of
    # benchmarks/vs_vllm.py, served by both Tandem and vLLM's CPU build from one HF
    # directory. head_dim 64: vLLM's CPU attention rejects stories260K's head_dim 8.
    "llama-20m": _cfg(hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=6, num_key_value_heads=2, vocab_size=512,
                      max_position_embeddings=2048),
    # ~1B shape, for store and transfer cost estimates (slow on CPU; not for tests).
    "llama-1b": _cfg(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                     max_position_embeddings=8192, tie_word_embeddings=True),
    # Tiny shapes of each supported family, for exactness tests against HF.
    "tiny-llama-gqa": _cfg(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                           num_attention_heads=8, num_key_value_heads=2, vocab_size=512,
                           max_position_embeddings=1024),
    "tiny-llama3": _cfg(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                        max_position_embeddings=4096, rope_theta=500000.0,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 256}),
    "tiny-qwen2": _cfg(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=64,
                       intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=512, max_position_embeddings=1024,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "tiny-mistral": _cfg(architectures=["MistralForCausalLM"], model_type="mistral",
                         hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, vocab_size=512,
                         max_position_embeddings=1024, sliding_window=None),
}


def preset_config(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise KeyError(name)
    return dict(PRESETS[name])
