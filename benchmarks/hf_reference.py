"""Hugging Face reference models built from the engine's own weights.

Used as the baseline of the engine benchmarks and as the exactness oracle of the engine
tests. ``transformers`` is a test/benchmark dependency only: the runtime never imports it.
"""
from __future__ import annotations

import logging

import torch

from engine.config import ModelConfig
from engine.model import CausalLM

logger = logging.getLogger(__name__)


def hf_config(cfg: ModelConfig):
    """An HF ``PretrainedConfig`` equal to ``cfg`` (``to_hf()``; transformers 5 reads
    ``rope_scaling`` into ``rope_parameters`` itself)."""
    import transformers

    raw = cfg.to_hf()
    model_type = raw.pop("model_type")
    return transformers.AutoConfig.for_model(model_type, **raw)


def engine_to_hf_state(model: CausalLM) -> dict[str, torch.Tensor]:
    """The engine's fused parameters under HF names (q/k/v and gate/up split back apart)."""
    cfg = model.cfg
    q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": model.embed.weight,
                                    "model.norm.weight": model.norm.weight}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for i, layer in enumerate(model.layers):
        pre = f"model.layers.{i}."
        q, k, v = layer.qkv.weight.split([q_size, kv_size, kv_size])
        out |= {pre + "self_attn.q_proj.weight": q, pre + "self_attn.k_proj.weight": k,
                pre + "self_attn.v_proj.weight": v,
                pre + "self_attn.o_proj.weight": layer.o_proj.weight}
        if layer.qkv.bias is not None:
            qb, kb, vb = layer.qkv.bias.split([q_size, kv_size, kv_size])
            out |= {pre + "self_attn.q_proj.bias": qb, pre + "self_attn.k_proj.bias": kb,
                    pre + "self_attn.v_proj.bias": vb}
        gate, up = layer.gate_up.weight.chunk(2)
        out |= {pre + "mlp.gate_proj.weight": gate, pre + "mlp.up_proj.weight": up,
                pre + "mlp.down_proj.weight": layer.down.weight,
                pre + "input_layernorm.weight": layer.input_norm.weight,
                pre + "post_attention_layernorm.weight": layer.post_norm.weight}
    return {name: t.detach().clone().contiguous() for name, t in out.items()}


def hf_model_from_engine(model: CausalLM, attn_implementation: str = "sdpa"):
    """An HF ``*ForCausalLM`` with exactly the engine model's weights, dtype and device."""
    import transformers

    param = next(model.parameters())
    hf = transformers.AutoModelForCausalLM.from_config(
        hf_config(model.cfg), attn_implementation=attn_implementation, dtype=param.dtype)
    missing, unexpected = hf.load_state_dict(engine_to_hf_state(model), strict=False)
    # Tied heads show up as "missing" lm_head.weight; anything else is a real mismatch.
    missing = [m for m in missing if not (m == "lm_head.weight" and model.cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"HF model does not match the engine's weights: missing {missing}, "
                         f"unexpected {unexpected}")
    if model.cfg.tie_word_embeddings:
        hf.tie_weights()
    return hf.to(param.device).eval()
