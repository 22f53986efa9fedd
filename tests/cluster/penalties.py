"""Served output with penalties and constraints equals the offline engine's, greedy and seeded;
shared by the disaggregated and colocated tests. In disaggregated mode the first token is
sampled on the prefill worker and the rest on the decode worker: both must apply them (the
prompt counts for the repetition penalty, the output for presence and frequency)."""
from __future__ import annotations

from engine import LLM, SamplingParams
from tandem_client import TandemClient

PROMPT = "Lily and Ben went to the park to play with their red ball. " * 6
CASES = [
    {"repetition_penalty": 1.4, "temperature": 0.0},
    {"presence_penalty": 1.5, "frequency_penalty": 0.5, "temperature": 0.0},
    {"repetition_penalty": 1.3, "frequency_penalty": 0.8, "temperature": 0.8, "seed": 11},
    {"min_tokens": 6, "logit_bias": {2: 100.0}, "temperature": 0.0},     # 2: stories260K's EOS
]
MAX_TOKENS = 24


def assert_served_penalties_equal_offline(target: str) -> None:
    llm = LLM("stories260K")
    ids = llm.tokenizer.encode(PROMPT)
    plain = llm.generate([ids], SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0))[0]
    with TandemClient(target, timeout=60) as client:
        for case in CASES:
            want = llm.generate([ids], SamplingParams(max_tokens=MAX_TOKENS, **case))[0]
            got = client.generate(PROMPT, max_tokens=MAX_TOKENS, **case)
            assert got.token_ids == want.token_ids, case
            assert got.text == want.text and got.finish_reason == want.finish_reason
            if case["temperature"] == 0.0:
                assert want.token_ids != plain.token_ids, case     # not a no-op here
    assert 2 in llm.engine.eos_token_ids
