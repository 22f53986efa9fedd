"""The export/import boundary: one sequence's KV and state, engine to engine.

A prefill engine exports a ``SequenceKV`` after it has computed the prompt and sampled
the first token; a decode engine imports it and continues exactly as if it had done the
prefill itself. ``kv`` covers the first ``num_computed`` tokens of ``token_ids``; the last
token (the one just sampled) has no KV yet, it is the next decode input.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.sampling_params import SamplingParams


@dataclass(slots=True, frozen=True)
class KVLayout:
    """Shape of one engine's KV: what a codec and the wire format need to know."""
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str                  # "float32" | "bfloat16" | "float16"
    model_fingerprint: str      # hex digest of the model config + weights identity


@dataclass(slots=True)
class SequenceKV:
    request_id: str
    token_ids: list[int]        # prompt + generated so far
    prompt_len: int
    kv: torch.Tensor            # [num_layers, 2, num_computed, num_kv_heads, head_dim]
    sampling: SamplingParams
    rng_state: bytes | None = None      # torch.Generator state for seeded sampling
    output_text_offset: int = 0         # chars of output text already emitted upstream
    extra: dict = field(default_factory=dict)

    @property
    def num_computed(self) -> int:
        return int(self.kv.shape[2])

    def validate(self, layout: KVLayout) -> None:
        want = (layout.num_layers, 2, len(self.token_ids) - 1, layout.num_kv_heads, layout.head_dim)
        if tuple(self.kv.shape) != want:
            raise ValueError(f"kv shape {tuple(self.kv.shape)} does not match layout {want}")
        if not 0 < self.prompt_len <= len(self.token_ids):
            raise ValueError(f"prompt_len {self.prompt_len} outside 1..{len(self.token_ids)}")
