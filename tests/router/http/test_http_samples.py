"""``n`` and ``best_of`` through the official ``openai`` client on a real router over a real
stories260K engine: each sample equals the request sent alone with seed + i, the prompt is
prefilled once, the usage counts the prompt once and every generated token, and one refused
sample fails the request with nothing left running."""
from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/router: the helpers

from frontdoor_helpers import make_llm, router_config, sample, scrape, start_router  # noqa: E402

from router.config import LimitsConfig  # noqa: E402
from waiting import wait_until  # noqa: E402
from tandem_client import TandemClient  # noqa: E402

PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play"


@pytest.fixture(scope="module")
def router():
    r = start_router(make_llm(max_num_seqs=16))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def oai(router):
    client = openai.OpenAI(base_url=f"{router.http_url}/v1", api_key="unused", max_retries=0, timeout=60)
    yield client
    client.close()


def _alone(router, seeds: list[int], **kw) -> list[str]:
    with TandemClient(router.target, timeout=60) as client:
        return [client.generate(PROMPT, max_tokens=20, temperature=1.0, seed=s, **kw).text for s in seeds]


def _computed(router) -> float:
    """Prompt tokens the engine computed (served minus served from the prefix cache)."""
    text = scrape(router.metrics_url)
    return sample(text, "tandem_prompt_tokens_total") - sample(text, "tandem_prefix_hit_tokens_total")


def test_n_samples_equal_each_seed_alone_reproducibly_and_prefill_once(router, oai):
    before = _computed(router)
    first = oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=20, n=4, seed=5)
    computed = _computed(router) - before
    again = oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=20, n=4, seed=5)
    texts = [c.text for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2, 3]
    assert texts == [c.text for c in again.choices] == _alone(router, [5, 6, 7, 8])
    assert len(set(texts)) == 4
    assert computed == first.usage.prompt_tokens                # one prefill for four samples
    assert first.usage.completion_tokens == 80                  # every sample's tokens, the prompt once
    assert first.usage.total_tokens == first.usage.prompt_tokens + 80


def test_streamed_chat_samples_carry_their_index_and_equal_the_whole_response(oai):
    messages = [{"role": "user", "content": "Tell me about Lily"}]
    whole = oai.chat.completions.create(model="stories260K", messages=messages, max_tokens=16, n=3, seed=11)
    stream = oai.chat.completions.create(model="stories260K", messages=messages, max_tokens=16, n=3,
                                         seed=11, stream=True, stream_options={"include_usage": True})
    texts, roles, reasons, usage = ["", "", ""], [0, 0, 0], [None] * 3, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            roles[c.index] += c.delta.role == "assistant"
            reasons[c.index] = c.finish_reason or reasons[c.index]
    assert texts == [c.message.content for c in whole.choices]
    assert roles == [1, 1, 1] and reasons == [c.finish_reason for c in whole.choices]
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_best_of_returns_the_n_samples_of_highest_cumulative_logprob(oai):
    every = oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=12, n=4, seed=3, logprobs=0)
    ranked = sorted(every.choices, key=lambda c: -sum(c.logprobs.token_logprobs))
    best = oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=12, n=2, best_of=4, seed=3)
    assert [c.text for c in best.choices] == [c.text for c in ranked[:2]]
    assert [c.index for c in best.choices] == [0, 1]
    assert all(c.logprobs is None for c in best.choices)     # not asked: not returned
    assert best.usage.completion_tokens == 48                # all four were generated


def test_echo_and_logprobs_reach_every_sample(oai):
    out = oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=4, n=2, seed=1,
                                 echo=True, logprobs=1)
    for c in out.choices:
        assert c.text.startswith(PROMPT)
        assert c.logprobs.token_logprobs[0] is None and len(c.logprobs.tokens) == \
            out.usage.prompt_tokens + 4


def test_one_refused_sample_fails_the_request_and_leaves_nothing_running():
    llm = make_llm()
    r = start_router(llm, config=router_config(limits=LimitsConfig(tenant_max_concurrency=2)))
    try:
        client = openai.OpenAI(base_url=f"{r.http_url}/v1", api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="stories260K", prompt=PROMPT, max_tokens=50, n=4, seed=1)
        ok = client.completions.create(model="stories260K", prompt=PROMPT, max_tokens=5, n=2, seed=1)
        assert len(ok.choices) == 2
        client.close()
        # the cancelled samples' aborts reach the engine thread after the response
        wait_until(lambda: not llm.engine.requests and not llm.engine.forks.leaders
                   and not llm.engine.forks.held, 10, "the cancelled samples to be aborted")
        assert r.server.gateway.inflight == 0
    finally:
        r.stop()


@pytest.mark.parametrize("logprobs", [None, 2])
def test_a_streamed_echo_gives_the_whole_responses_text_and_logprobs(oai, logprobs):
    kw = dict(model="stories260K", prompt=PROMPT, max_tokens=6, temperature=0, echo=True, logprobs=logprobs)
    whole = oai.completions.create(**kw).choices[0]
    chunks = list(oai.completions.create(**kw, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.text and text.startswith(PROMPT)
    first = chunks[0].choices[0]
    assert first.text == PROMPT and first.model_extra.get("token_ids") == []     # echo counts no tokens
    if logprobs is None:
        assert all(c.choices[0].logprobs is None for c in chunks if c.choices)
        return
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    lps = [v for c in chunks if c.choices and c.choices[0].logprobs for v in c.choices[0].logprobs.token_logprobs]
    assert tokens == whole.logprobs.tokens
    assert lps[0] is None and whole.logprobs.token_logprobs[0] is None
    assert all(abs(a - b) <= 1e-4 for a, b in zip(lps[1:], whole.logprobs.token_logprobs[1:]))
