"""Served logprobs equal HF transformers' log-softmax of the same sequence (raw logits, as
vLLM), through the SDK and the ``openai`` package; shared by the local, disaggregated and
colocated tests. In disaggregated mode the first token's logprobs come from the prefill
worker and the rest from the decode worker."""
from __future__ import annotations

import openai
import torch

from engine.model_info import resolve_model_dir
from tandem_client import TandemClient

PROMPT = "Once upon a time, there was a little girl named Lily."
TOP = 3
N = 12
ATOL = 1e-4


def _hf_logprobs(ids: list[int], prompt_len: int) -> torch.Tensor:
    """[len(ids) - prompt_len, V]: the log-softmax that predicted each generated token."""
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(resolve_model_dir("stories260K"),
                                                           dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, -1)[prompt_len - 1:len(ids) - 1]


def _close(a: list, b: list) -> bool:
    """Equal within fp32's promise: two runs of one prompt may batch or reuse a cached prefix
    differently, which moves the last bits."""
    return len(a) == len(b) and all(abs(x - y) <= ATOL for x, y in zip(a, b))


def assert_logprobs_match_hf(target: str, http_url: str, api_key: str = "unused",
                             metadata: list | None = None) -> None:
    with TandemClient(target, timeout=60, metadata=metadata or ()) as client:
        prompt_ids = client.generate(PROMPT, max_tokens=1, temperature=0).usage.prompt_tokens
        greedy = client.generate(PROMPT, max_tokens=N, temperature=0, logprobs=TOP, ignore_eos=True)
        sampled = client.generate(PROMPT, max_tokens=N, temperature=0.9, seed=3, logprobs=TOP,
                                  ignore_eos=True, repetition_penalty=1.3)
        from engine import LLM
        ids = LLM("stories260K").tokenizer.encode(PROMPT)
        assert len(ids) == prompt_ids
        for res in (greedy, sampled):
            assert len(res.logprobs) == len(res.token_ids) == N
            ref = _hf_logprobs(ids + res.token_ids, len(ids))
            for i, (tok, lp) in enumerate(zip(res.token_ids, res.logprobs)):
                assert abs(lp.logprob - float(ref[i, tok])) <= ATOL, (i, lp.logprob, float(ref[i, tok]))
                # The served alternatives are HF's top ones (order may differ only within a tie).
                assert all(abs(v - float(ref[i, t])) <= ATOL for t, v in lp.top)
                assert _close([v for _, v in lp.top], ref[i].topk(TOP).values.tolist())
    with openai.OpenAI(base_url=f"{http_url}/v1", api_key=api_key, max_retries=0, timeout=60) as oai:
        comp = oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=N, temperature=0,
                                      logprobs=TOP, extra_body={"ignore_eos": True})
        lp = comp.choices[0].logprobs
        assert _close(lp.token_logprobs, [x.logprob for x in greedy.logprobs])
        assert "".join(lp.tokens) == comp.choices[0].text
        assert lp.text_offset[0] == 0 and len(lp.top_logprobs[0]) == TOP
        chat = oai.chat.completions.create(model="stories260K", messages=[{"role": "user", "content": PROMPT}],
                                           max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
        content = chat.choices[0].logprobs.content
        assert len(content) == chat.usage.completion_tokens and len(content[0].top_logprobs) == 2
        assert content[0].top_logprobs[0].logprob == content[0].logprob     # greedy: the top one
        streamed = [c for c in oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=N,
                                                       temperature=0, logprobs=TOP, stream=True,
                                                       extra_body={"ignore_eos": True})
                    if c.choices and c.choices[0].logprobs]
        assert _close([v for c in streamed for v in c.choices[0].logprobs.token_logprobs], lp.token_logprobs)
        # echo + logprobs (what lm-eval's loglikelihood asks): the prompt's logprobs come first.
        echoed = oai.completions.create(model="stories260K", prompt=PROMPT,
                                        max_tokens=1, temperature=0, logprobs=TOP, echo=True)
        e = echoed.choices[0]
        assert e.text.startswith(PROMPT) and len(e.logprobs.token_logprobs) == len(ids) + 1
        assert e.logprobs.token_logprobs[0] is None and e.logprobs.top_logprobs[0] is None
        ref = _hf_logprobs(ids + greedy.token_ids[:1], 1)           # every position's prediction
        for j in range(1, len(ids) + 1):
            tok = (ids + greedy.token_ids[:1])[j]
            assert abs(e.logprobs.token_logprobs[j] - float(ref[j - 1, tok])) <= ATOL, j
            assert len(e.logprobs.top_logprobs[j]) == TOP
        assert "".join(e.logprobs.tokens) == e.text
    with TandemClient(target, timeout=60, metadata=metadata or ()) as client:
        res = client.generate(token_ids=ids, max_tokens=1, temperature=0, prompt_logprobs=0)
        assert res.prompt_logprobs[0] is None and len(res.prompt_logprobs) == len(ids)
        assert res.usage.cached_prompt_tokens == 0           # computed, not served from a cache
        assert _close([x.logprob for x in res.prompt_logprobs[1:]], e.logprobs.token_logprobs[1:len(ids)])
