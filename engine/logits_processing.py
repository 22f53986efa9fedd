"""Penalties and constraints on a step's logits, before sampling, with vLLM's semantics.

In vLLM's order (its v1 sampler: logits processors, then penalties, then temperature and
top-k/top-p), for each row whose request asks for any of them:
1. ``logit_bias``: the bias is added to the token's logit;
2. ``min_tokens``: while fewer tokens than that were generated, EOS (unless ``ignore_eos``)
   and ``stop_token_ids`` get -inf (``engine.stopping`` also ignores stop strings until then);
3. ``repetition_penalty`` p, on every token of the prompt or the output: a logit > 0 is
   multiplied by 1/p, any other by p;
4. ``frequency_penalty`` f and ``presence_penalty`` r, on the output only:
   logit -= f * count(token in output) + r * (count > 0).
Rows that ask for none are not touched, and a batch with none costs one pass over its
requests' parameters.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence as Seq
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from engine.sequence import Sequence


def process_logits(logits: torch.Tensor, seqs: Seq[Sequence], eos_token_ids: Collection[int]) -> torch.Tensor:
    """Adjust ``logits`` [len(seqs), V] in place for the rows whose requests ask; returns it."""
    rows = [i for i, seq in enumerate(seqs) if seq.sampling.adjusts_logits]
    if not rows:
        return logits
    vocab = logits.shape[-1]
    with torch.inference_mode():      # the runner's logits are inference tensors
        for i in rows:
            _adjust_row(logits[i], seqs[i], vocab, eos_token_ids)
    return logits


def _adjust_row(row: torch.Tensor, seq: Sequence, vocab: int, eos_token_ids: Collection[int]) -> None:
    p = seq.sampling
    if p.logit_bias:
        ids = torch.tensor(list(p.logit_bias), dtype=torch.long, device=row.device)
        row[ids] += torch.tensor(list(p.logit_bias.values()), dtype=row.dtype, device=row.device)
    if p.min_tokens and seq.num_output_tokens < p.min_tokens:
        stops = set(p.stop_token_ids) | (set() if p.ignore_eos else set(eos_token_ids))
        stops = [t for t in stops if t < vocab]
        if stops:
            row[torch.tensor(stops, dtype=torch.long, device=row.device)] = float("-inf")
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(seq.token_ids)), dtype=torch.long, device=row.device)
        vals = row[seen]
        row[seen] = vals * torch.where(vals > 0, 1.0 / p.repetition_penalty, p.repetition_penalty)
    if (p.frequency_penalty or p.presence_penalty) and seq.num_output_tokens:
        out = torch.tensor(seq.output_ids, dtype=torch.long, device=row.device)
        counts = torch.bincount(out, minlength=vocab)[:vocab].to(row.dtype)
        row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)
