"""Shared helpers of the global KV store tests (fixtures live in conftest.py)."""
from __future__ import annotations

import torch

from engine.kv_export import KVLayout
from kv_transfer.store import StoreConfig

LAYOUT = KVLayout(num_layers=2, num_kv_heads=2, head_dim=8, dtype="float32",
                  model_fingerprint="f00dfeed" * 4)
CHUNK = 16

STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside "
         "in the park with her friends. One day, she saw a big red ball under a tree. "
         "Lily ran to the ball and picked it up. It was shiny and new. She wanted to share "
         "it with her friend Tom, so she went to his house and knocked on the door. Tom "
         "was happy to see her and they played with the ball all day long. ")


def synthetic_kv(num_tokens: int, seed: int = 0, layout: KVLayout = LAYOUT) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(layout.num_layers, 2, num_tokens, layout.num_kv_heads, layout.head_dim,
                       generator=gen)


def store_config(url: str, **overrides) -> StoreConfig:
    opts = dict(url=url, chunk_size=CHUNK, local_cpu_bytes=8 << 20, calibrate=False,
                op_timeout_s=0.5, breaker_failures=2, breaker_reset_s=0.2)
    opts.update(overrides)
    return StoreConfig(**opts)
