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
        assert abs(lp - float(ref[i, tok])) <= 1e-4
        assert all(abs(v - float(ref[i, t])) <= 1e-4 for t, v in top)      # order: up to ties
        assert torch.allclose(torch.tensor([v for _, v in top]), ref[i].topk(4).values, atol=1e-4, rtol=0)


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


@pytest.mark.parametrize("budget", [2048, 16])
def test_prompt_logprobs_are_the_log_softmax_of_the_prompt_in_one_pass_or_chunks(budget):
    """Chunked prefill (a 16-token budget) gives the same entries; a cached prefix is not
    used for such a request, so the second identical prompt still gets every entry."""
    llm = LLM("stories260K", max_num_batched_tokens=budget)
    ids = llm.tokenizer.encode(PROMPT * 3)
    assert len(ids) > 3 * 16
    ref = torch.log_softmax(llm.engine.prompt_logits(ids), -1)
    for _ in range(2):
        out = llm.generate([ids], SamplingParams(max_tokens=2, temperature=0, prompt_logprobs=2))[0]
        assert out.num_cached_tokens == 0
        assert len(out.prompt_logprobs) == len(ids) and out.prompt_logprobs[0] is None
        for j in range(1, len(ids)):
            lp, top = out.prompt_logprobs[j]
            assert abs(lp - float(ref[j - 1, ids[j]])) <= 1e-4
            assert all(abs(v - float(ref[j - 1, t])) <= 1e-4 for t, v in top)
            assert torch.allclose(torch.tensor([v for _, v in top]), ref[j - 1].topk(2).values, atol=1e-4, rtol=0)
    plain = llm.generate([ids], SamplingParams(max_tokens=2, temperature=0))[0]
    assert plain.prompt_logprobs is None and plain.num_cached_tokens > 0   # the cache still serves others
