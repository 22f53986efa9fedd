"""Llama-family decoder (Llama 2/3, Mistral, Qwen2) over a paged KV cache.

Weights use a fused layout (``qkv``, ``gate_up``); ``engine.weights`` maps HF names onto it.
Numerics follow HF: RMSNorm in float32, rotary in the compute dtype, SiLU-gated MLP.

Matmuls go through ``engine.matmul.Linear`` (library by CPU vendor; optional bf16 on AMX).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from engine import cpu_kernels
from engine.attention import AttentionMetadata, paged_attention
from engine.config import ModelConfig
from engine.matmul import Linear, MatmulPlan, linear_for
from engine.rope import RotaryEmbedding

logger = logging.getLogger(__name__)

class RMSNorm(nn.Module):
    native = False      # engine.cpu_kernels (CPU, float32): one pass instead of several ops

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if self.native:
            return cpu_kernels.rms_norm(x, self.weight, self.eps)
        if dtype == torch.float32:
            # Same arithmetic as below in one fused kernel (bitwise equal at float32).
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


class DecoderLayer(nn.Module):
    native = False      # RoPE and SiLU-gate through engine.cpu_kernels (CPU, float32)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.qkv = Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.qkv_bias)
        self.o_proj = Linear(self.q_size, cfg.hidden_size, bias=False)
        self.gate_up = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.scale = cfg.head_dim ** -0.5

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor],
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        n = x.shape[0]
        h = self.input_norm(x)
        qk, v = self.qkv(h).split([self.q_size + self.kv_size, self.kv_size], dim=-1)
        # Queries and keys rotate together: one set of elementwise ops for both.
        qk = qk.view(n, self.num_heads + self.num_kv_heads, self.head_dim)
        qk = cpu_kernels.rope(qk, *rotary) if self.native else RotaryEmbedding.rotate(qk, *rotary)
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
        v = v.view(n, self.num_kv_heads, self.head_dim)
        attn = paged_attention(q, k, v, k_cache, v_cache, meta, self.scale)
        x = x + self.o_proj(attn.reshape(n, self.q_size))
        gate_up = self.gate_up(self.post_norm(x))
        if self.native:
            return x + self.down(cpu_kernels.silu_mul(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class CausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, max_positions: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if not cfg.tie_word_embeddings:
            self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rope = RotaryEmbedding(cfg.head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling)
        self.matmul = MatmulPlan("torch")
        self._head_packed: torch.Tensor | None = None

    def select_kernels(self, matmul_dtype: str | None = None) -> None:
        """Pick the matmul path for the device and dtype the model now lives on."""
        param = next(self.parameters())
        self.matmul = MatmulPlan.choose(param.device, param.dtype, matmul_dtype)
        # A tied head is the embedding, not a Linear: its packed copy is kept here.
        self._head_packed = self.matmul.pack(self.embed.weight) if self.cfg.tie_word_embeddings else None
        native = param.device.type == "cpu" and param.dtype == torch.float32 and cpu_kernels.available()
        for module in self.modules():
            if isinstance(module, Linear):
                module.apply_plan(self.matmul)
            elif isinstance(module, (RMSNorm, DecoderLayer)):
                module.native = native
        logger.info("matmul path: %s (native one-row GEMV: %s); native elementwise kernels: %s",
                    self.matmul.mode, self.matmul.gemv, native)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        """Hidden states [N, hidden] of a flat token batch. kv_cache: [L, 2, slots, Hkv, D]."""
        x = self.embed(input_ids)
        rotary = self.rope.tables(positions, x.dtype)      # shared by every layer
        for i, layer in enumerate(self.layers):
            x = layer(x, rotary, kv_cache[i, 0], kv_cache[i, 1], meta)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.cfg.tie_word_embeddings:
            return self.lm_head(hidden).float()
        return linear_for(self.matmul, hidden, self.embed.weight, self._head_packed, None).float()

    @torch.no_grad()
    def init_random(self, seed: int) -> None:
        """Seeded random weights of realistic scale (deterministic for a seed)."""
        gen = torch.Generator().manual_seed(seed)
        std = self.cfg.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
