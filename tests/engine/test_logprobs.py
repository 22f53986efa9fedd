"""Logprobs are the raw model's log-softmax (as vLLM's default): the same whatever the
sampling settings, one entry per generated token, and only when asked."""
from __future__ import annotations

import pytest
import torch

from engine import LLM, SamplingParams

PROMPT = "Once upon a time, there was a little girl named Lily."


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM("stories260K")


@pytest.mark.parametrize("settings", [{"temperature": 0.0}, {"temperature": 1.3, "seed": 4},
                                      {"temperature": 0.7, "seed": 9, "repetition_penalty": 1.5,
                                       "logit_bias": {261: 5.0}, "top_k": 5}])
def test_logprobs_are_the_teacher_forced_log_softmax_whatever_the_sampling(llm, settings):
    ids = llm.tokenizer.encode(PROMPT)
    out = llm.generate([ids], SamplingParams(max_tokens=10, ignore_eos=True, logprobs=4, **settings))[0]
    assert len(out.logprobs) == len(out.token_ids) == 10
    ref = torch.log_softmax(llm.engine.prompt_logits(ids + out.token_ids)[len(ids) - 1:-1], -1)
    for i, (tok, (lp, top)) in enumerate(zip(out.token_ids, out.logprobs)):
        assert abs(lp - float(ref[i, tok])) <= 1e-5
        vals, alt = ref[i].topk(4)
        assert [t for t, _ in top] == alt.tolist()
        assert torch.allclose(torch.tensor([v for _, v in top]), vals, atol=1e-5)


def test_no_logprobs_unless_asked_and_zero_gives_the_token_only(llm):
    ids = llm.tokenizer.encode(PROMPT)
    plain, zero = llm.generate([ids, ids], [SamplingParams(max_tokens=3, temperature=0),
                                            SamplingParams(max_tokens=3, temperature=0, logprobs=0)])
    assert plain.logprobs is None and plain.new_logprobs is None
    assert [top for _, top in zero.logprobs] == [[], [], []]


@pytest.mark.parametrize("bad", [-1, 21, True, 2.5])
def test_out_of_range_logprobs_are_refused(bad):
    with pytest.raises(ValueError, match="logprobs"):
        SamplingParams(logprobs=bad)
