"""Model and engine configuration.

``ModelConfig`` is parsed from a Hugging Face ``config.json`` (Llama, Mistral, Qwen2) and
validated field by field: anything the engine would silently get wrong fails at load with
the field named. ``EngineConfig`` holds the runtime knobs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from engine.errors import UnsupportedModelError
from tandem_common.config import ge, matches, setting, validate

logger = logging.getLogger(__name__)

SUPPORTED_ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                   "Qwen2ForCausalLM": "qwen2"}
SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16",
                  "fp16": "float16", "half": "float16"}


def normalize_dtype(name: str) -> str:
    name = _DTYPE_ALIASES.get(str(name).lower(), str(name).lower()).removeprefix("torch.")
    if name not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be one of {SUPPORTED_DTYPES}, got {name!r}")
    return name


@dataclass(slots=True, frozen=True)
class RopeScaling:
    rope_type: str = "default"          # "default" | "linear" | "llama3"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(slots=True, frozen=True)
class ModelConfig:
    architecture: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling
    qkv_bias: bool
    tie_word_embeddings: bool
    torch_dtype: str
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    initializer_range: float = 0.02

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "ModelConfig":
        archs = cfg.get("architectures") or []
        arch = archs[0] if archs else None
        if arch not in SUPPORTED_ARCHS:
            raise UnsupportedModelError(
                f"config.json field 'architectures': {archs!r} is not supported "
                f"(supported: {sorted(SUPPORTED_ARCHS)})")
        model_type = cfg.get("model_type", SUPPORTED_ARCHS[arch])

        def need(key: str, kind=int):
            if key not in cfg or cfg[key] is None:
                raise UnsupportedModelError(f"config.json is missing required field '{key}'")
            val = cfg[key]
            if kind is int and (not isinstance(val, int) or isinstance(val, bool) or val < 1):
                raise UnsupportedModelError(f"config.json field '{key}' must be a positive int, got {val!r}")
            return val

        hidden = need("hidden_size")
        heads = need("num_attention_heads")
        kv_heads = cfg.get("num_key_value_heads") or heads
        if heads % kv_heads:
            raise UnsupportedModelError(
                f"config.json field 'num_key_value_heads': {kv_heads} does not divide "
                f"num_attention_heads {heads}")
        head_dim = cfg.get("head_dim") or hidden // heads
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModelError(f"config.json field 'hidden_act': {act!r} is not supported (only 'silu')")
        if cfg.get("mlp_bias"):
            raise UnsupportedModelError("config.json field 'mlp_bias': true is not supported")
        if model_type != "qwen2" and cfg.get("attention_bias") and arch != "LlamaForCausalLM":
            raise UnsupportedModelError("config.json field 'attention_bias' is only supported for Llama and Qwen2")
        max_pos = need("max_position_embeddings")
        window = cfg.get("sliding_window")
        use_window = cfg.get("use_sliding_window", model_type == "mistral")
        if window and use_window and window < max_pos:
            # Capping the context at the window keeps attention exact without a window mask.
            logger.warning("sliding_window=%d < max_position_embeddings=%d: capping context at %d",
                           window, max_pos, window)
            max_pos = window
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        rope = cfg.get("rope_parameters") or {}
        theta = float(cfg.get("rope_theta", rope.get("rope_theta", 10000.0)))
        return cls(
            architecture=arch, model_type=model_type, hidden_size=hidden,
            intermediate_size=need("intermediate_size"), num_layers=need("num_hidden_layers"),
            num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
            vocab_size=need("vocab_size"), max_position_embeddings=max_pos,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope_theta=theta,
            rope_scaling=_parse_rope_scaling(cfg.get("rope_scaling") or rope),
            qkv_bias=bool(model_type == "qwen2" or cfg.get("attention_bias", False)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            torch_dtype=_checkpoint_dtype(cfg),
            bos_token_id=cfg.get("bos_token_id"), eos_token_ids=eos_ids,
            initializer_range=float(cfg.get("initializer_range", 0.02)),
        )

    def to_hf(self) -> dict[str, Any]:
        """The HF config.json equivalent (used to build reference models in tests)."""
        arch_type = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}[self.model_type]
        out: dict[str, Any] = {
            "architectures": [self.architecture], "model_type": arch_type,
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim,
            "vocab_size": self.vocab_size, "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "hidden_act": "silu", "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": self.torch_dtype, "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_ids) if len(self.eos_token_ids) != 1 else self.eos_token_ids[0],
            "initializer_range": self.initializer_range,
        }
        if self.model_type == "llama":
            out["attention_bias"] = self.qkv_bias
        if self.rope_scaling.rope_type != "default":
            out["rope_scaling"] = {"rope_type": self.rope_scaling.rope_type, **{
                k: v for k, v in asdict(self.rope_scaling).items() if k != "rope_type"}}
        return out

    def fingerprint_payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, default=str).encode()

    @property
    def num_params(self) -> int:
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        attn = h * d * (self.num_heads * 2 + self.num_kv_heads * 2)
        per_layer = attn + 3 * h * i + 2 * h
        emb = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + emb + h


def _checkpoint_dtype(cfg: dict[str, Any]) -> str:
    try:
        return normalize_dtype(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    except ValueError as exc:
        raise UnsupportedModelError(f"config.json field 'torch_dtype': {exc}") from None


def _parse_rope_scaling(raw: dict[str, Any]) -> RopeScaling:
    rope_type = raw.get("rope_type") or raw.get("type") or "default"
    if rope_type == "default":
        return RopeScaling()
    if rope_type not in ("linear", "llama3"):
        raise UnsupportedModelError(
            f"config.json field 'rope_scaling.rope_type': {rope_type!r} is not supported "
            "(supported: default, linear, llama3)")
    factor = float(raw.get("factor", 1.0))
    if not math.isfinite(factor) or factor <= 0:
        raise UnsupportedModelError(f"config.json field 'rope_scaling.factor' must be > 0, got {factor}")
    if rope_type == "linear":
        return RopeScaling("linear", factor)
    return RopeScaling("llama3", factor, float(raw.get("low_freq_factor", 1.0)),
                       float(raw.get("high_freq_factor", 4.0)),
                       int(raw.get("original_max_position_embeddings", 8192)))


# The default KV reservation's cap (num_kv_blocks unset). On CPU the cache is reserved with
# calloc, so pages cost memory only once a sequence writes them.
KV_CACHE_BYTES = 1 << 30


@dataclass(slots=True)
class EngineConfig:
    """Runtime knobs of one engine instance (one per worker); the cluster config's ``model:``."""
    model: str = "stories260K"           # bundled name, preset name or checkpoint directory
    dtype: Literal["float32", "bfloat16", "float16"] | None = None   # None: the checkpoint's
    device: str = setting("auto", matches(r"auto|cpu|cuda(:\d+)?", "'auto', 'cpu', 'cuda' or 'cuda:N'"))
    block_size: int = setting(16, ge(1))
    max_num_seqs: int = setting(256, ge(1))
    max_num_batched_tokens: int = setting(2048, ge(1))   # chunked-prefill token budget per step
    max_model_len: int | None = setting(None, ge(2))     # None: the model's context
    num_kv_blocks: int | None = setting(None, ge(2))     # None: max_num_seqs full contexts, <= KV_CACHE_BYTES
    enable_prefix_caching: bool = True
    seed: int = 0                        # random-weight presets and unseeded sampling
    num_threads: int | None = setting(None, ge(1))       # torch intra-op threads; None: torch's default
    matmul_dtype: Literal["float32", "bfloat16"] | None = None   # bfloat16: AMX matmuls (opt-in)

    def __post_init__(self) -> None:
        if self.dtype is not None:
            self.dtype = normalize_dtype(self.dtype)
        validate(self)

    def resolved_device(self) -> str:
        """``device`` with "auto" made concrete: CUDA where present, else CPU (imports torch)."""
        if self.device != "auto":
            return self.device
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"


def fingerprint(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:32]
