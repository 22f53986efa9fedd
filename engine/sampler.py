"""Token sampling: greedy, temperature, top-k, top-p, each request with its own generator.

A per-request ``torch.Generator`` makes seeded sampling reproducible whatever else is in
the batch, and its state travels with an exported sequence so decode continues exactly.
"""
from __future__ import annotations

import torch

from engine.sampling_params import SamplingParams


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator | None]) -> list[int]:
    """logits: [B, V] float32. Returns one token id per row."""
    greedy_rows = [i for i, p in enumerate(params) if p.greedy]
    out = [0] * len(params)
    if greedy_rows:
        ids = logits[greedy_rows].argmax(dim=-1).tolist()
        for row, tok in zip(greedy_rows, ids):
            out[row] = tok
    for i, p in enumerate(params):
        if p.greedy:
            continue
        probs = _filtered_probs(logits[i], p)
        out[i] = int(torch.multinomial(probs.cpu(), 1, generator=generators[i]).item())
    return out


def _filtered_probs(row: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    row = row / p.temperature
    if p.top_k > 0 and p.top_k < row.shape[-1]:
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(row, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token once the mass before it already reaches top_p; the first always stays.
        drop = (cum - sorted_logits.softmax(-1)) >= p.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        row = torch.empty_like(row).scatter_(0, order, sorted_logits)
    return row.softmax(-1)


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def generator_state(gen: torch.Generator | None) -> bytes | None:
    return None if gen is None else gen.get_state().numpy().tobytes()


def restore_generator(state: bytes | None) -> torch.Generator | None:
    if state is None:
        return None
    gen = torch.Generator()
    gen.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return gen
