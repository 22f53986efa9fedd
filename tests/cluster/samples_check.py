"""``n`` samples through a real cluster (shared by the disaggregated and colocated tests):
four seeded samples are reproducible, each equals the request sent alone with seed + i, and
the prompt is computed once (the router's metrics: prompt tokens served minus those served
from a cache grow by one prompt). With several prefill (or colocated) workers this also
proves the samples were routed to one worker."""
from __future__ import annotations

import urllib.request
import uuid

import openai
from prometheus_client.parser import text_string_to_metric_families

from tandem_client import TandemClient

MAX_TOKENS = 16


def _computed(http_url: str) -> float:
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    total = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            total[s.name] = total.get(s.name, 0.0) + s.value
    return total["tandem_prompt_tokens_total"] - total["tandem_prefix_hit_tokens_total"]


def assert_samples_prefill_once(target: str, http_url: str) -> None:
    # A prompt no cache (engine or global store) has seen, so all of it must be computed.
    prompt = f"Once upon a time {uuid.uuid4().hex[:8]} a little dog named Max found a big red ball"
    oai = openai.OpenAI(base_url=f"{http_url}/v1", api_key="unused", max_retries=0, timeout=120)
    try:
        before = _computed(http_url)
        rid = {"X-Request-Id": f"samples-{uuid.uuid4().hex[:8]}"}
        first = oai.completions.create(model="stories260K", prompt=prompt, max_tokens=MAX_TOKENS,
                                       n=4, seed=21, extra_headers=rid)
        computed = _computed(http_url) - before
        again = oai.completions.create(model="stories260K", prompt=prompt, max_tokens=MAX_TOKENS,
                                       n=4, seed=21)
        # The client's request id again, another prompt: samples of different requests never
        # share a prefill (the fork group is the server's, not the client's id).
        other_prompt = prompt.replace("dog", "cat")
        other = oai.completions.create(model="stories260K", prompt=other_prompt, max_tokens=MAX_TOKENS,
                                       n=2, seed=5, extra_headers=rid)
    finally:
        oai.close()
    texts = [c.text for c in first.choices]
    assert texts == [c.text for c in again.choices]
    assert len(set(texts)) == 4
    with TandemClient(target, timeout=120) as client:
        alone = [client.generate(prompt, max_tokens=MAX_TOKENS, temperature=1.0, seed=21 + i).text
                 for i in range(4)]
    assert texts == alone
    with TandemClient(target, timeout=120) as client:
        assert [c.text for c in other.choices] == [
            client.generate(other_prompt, max_tokens=MAX_TOKENS, temperature=1.0, seed=5 + i).text
            for i in range(2)]
    assert computed == first.usage.prompt_tokens, (computed, first.usage)
    assert first.usage.completion_tokens == 4 * MAX_TOKENS
