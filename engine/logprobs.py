"""Log-probabilities of sampled tokens and their top alternatives.

As vLLM does by default (``logprobs_mode="raw_logprobs"``), they come from the model's raw
logits: a log-softmax before penalties, ``logit_bias``, temperature, top-k and top-p. So a
token's logprob does not depend on how it was sampled, and equals a teacher-forced
log-softmax of the same sequence (HF transformers' ``log_softmax(logits)``).

One entry per generated token: ``(logprob of the token, [(id, logprob), ...])``, the list
holding the ``logprobs`` most likely tokens, most likely first (empty when 0 was asked).
"""
from __future__ import annotations

import torch

from engine.outputs import TokenLogprob


class StepLogprobs:
    """The rows of one step that asked for logprobs, log-softmaxed once, before sampling."""

    def __init__(self, logits: torch.Tensor, wanted: list[int], top: list[int]):
        self.rows = {row: i for i, row in enumerate(wanted)}
        self.top = top
        self.table = torch.log_softmax(logits[wanted].float(), dim=-1)

    @classmethod
    def of(cls, logits: torch.Tensor, asked: list[int | None]) -> StepLogprobs | None:
        wanted = [i for i, k in enumerate(asked) if k is not None]
        if not wanted:
            return None
        return cls(logits, wanted, [asked[i] for i in wanted])

    def entry(self, row: int, token: int) -> TokenLogprob | None:
        i = self.rows.get(row)
        if i is None:
            return None
        lp = self.table[i]
        k = self.top[i]
        top: list[tuple[int, float]] = []
        if k:
            vals, ids = lp.topk(k)
            top = list(zip(ids.tolist(), vals.tolist()))
        return float(lp[token]), top
