"""Llama-family decoder (Llama 2/3, Mistral, Qwen2) over a paged KV cache.

Weights use a fused layout (``qkv``, ``gate_up``); ``engine.weights`` maps HF names onto it.
Numerics follow HF: RMSNorm in float32, rotary in the compute dtype, SiLU-gated MLP.

Float32 matmuls on CPU pick their library by CPU vendor. On AMD EPYC, MKL's sgemm reached
~17 GB/s for batch-1 GEMV and ~70 GFLOP/s at batch 32 where oneDNN reached ~23-32 GB/s and
~130-250 GFLOP/s (1-2 threads), so AMD (and any non-Intel CPU) goes through oneDNN. On Intel
Xeon (AVX-512, AMX) MKL is the faster one: a llama-20m layer's matmuls took 0.41 / 1.59 ms
with MKL against 0.54 / 1.86 ms with oneDNN at batch 1 / 32, one thread, so Intel keeps
``F.linear``. The choice is by vendor, not by a timing probe, so every process on a machine
computes the same numbers. ``TANDEM_ONEDNN=1``/``0`` forces either way; ``select_kernels``
checks oneDNN once against ``F.linear`` and falls back to it.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from engine.attention import AttentionMetadata, paged_attention
from engine.config import ModelConfig
from engine.rope import RotaryEmbedding

logger = logging.getLogger(__name__)

_ONEDNN_ENV = "TANDEM_ONEDNN"      # "1" / "0" forces the oneDNN matmul path on / off


def cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (e.g. GenuineIntel, AuthenticAMD); "" if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """oneDNN float32 linear on CPU: wanted (forced, or a non-Intel CPU), present, and agreeing
    with ``F.linear``."""
    if device.type != "cpu" or dtype != torch.float32:
        return False
    wanted = os.environ.get(_ONEDNN_ENV)
    if wanted == "0" or (wanted != "1" and cpu_vendor() == "GenuineIntel"):
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=gen) for s in ((3, 64), (48, 64), (48,)))
        return torch.allclose(_onednn_linear(x, w, b), F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    except (RuntimeError, AttributeError) as exc:   # op missing or primitive unsupported
        logger.info("oneDNN linear unavailable (%s); using F.linear", exc)
        return False


class Linear(nn.Linear):
    """``nn.Linear`` whose matmul can be routed through oneDNN (see module docstring)."""

    use_onednn = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_onednn:
            return _onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.float32:
            # Same arithmetic as below in one fused kernel (bitwise equal at float32).
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


class DecoderLayer(nn.Module):
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
        qk = RotaryEmbedding.rotate(qk.view(n, self.num_heads + self.num_kv_heads, self.head_dim), *rotary)
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
        v = v.view(n, self.num_kv_heads, self.head_dim)
        attn = paged_attention(q, k, v, k_cache, v_cache, meta, self.scale)
        x = x + self.o_proj(attn.reshape(n, self.q_size))
        gate, up = self.gate_up(self.post_norm(x)).chunk(2, dim=-1)
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
        self.use_onednn = False

    def select_kernels(self) -> None:
        """Pick the matmul path for the device and dtype the model now lives on."""
        param = next(self.parameters())
        self.use_onednn = onednn_usable(param.device, param.dtype)
        for module in self.modules():
            if isinstance(module, Linear):
                module.use_onednn = self.use_onednn
        logger.debug("matmul path: %s", "oneDNN" if self.use_onednn else "F.linear")

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        """Hidden states [N, hidden] of a flat token batch. kv_cache: [L, 2, slots, Hkv, D]."""
        x = self.embed(input_ids)
        rotary = self.rope.tables(positions, x.dtype)      # shared by every layer
        for i, layer in enumerate(self.layers):
            x = layer(x, rotary, kv_cache[i, 0], kv_cache[i, 1], meta)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.embed.weight if self.cfg.tie_word_embeddings else self.lm_head.weight
        if self.use_onednn:
            return _onednn_linear(hidden, weight, None).float()
        return F.linear(hidden, weight).float()

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
