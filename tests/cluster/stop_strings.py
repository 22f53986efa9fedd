"""Served text with stop strings equals the offline engine's, through gRPC (whole and streamed)
and the OpenAI HTTP API, greedy and seeded; shared by the disaggregated and colocated tests.

The first token's text is the case that broke: in disaggregated mode it is sampled on the
prefill worker and the decode worker carries on streaming from where prefill left off."""
from __future__ import annotations

import json
import urllib.request

from engine import LLM, SamplingParams
from tandem_client import TandemClient

# Stop strings of several lengths, each hit by at least one prompt below (asserted), so the cut
# at the stop is exercised; ", there" and ",," begin with the first token of "Once upon a time"
# (","), so that token is held back on the prefill worker and released or cut on decode.
STOPS = [".", ", ", " the", "Lily", ", there", ",,"]
NEVER_HIT = {",,"}
PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "Tom had a red ball"]
SAMPLINGS = [{"temperature": 0.0}, {"temperature": 0.8, "seed": 7}]
MAX_TOKENS = 48


def offline_cases() -> list[tuple[str, dict, str, object]]:
    """(prompt, sampling, stop, offline output) for every combination."""
    llm = LLM("stories260K", max_num_seqs=64)
    cases = []
    for sampling in SAMPLINGS:
        for stop in STOPS:
            params = SamplingParams(max_tokens=MAX_TOKENS, stop=[stop], **sampling)
            for prompt, out in zip(PROMPTS, llm.generate(PROMPTS, params)):
                cases.append((prompt, sampling, stop, out))
    stopped = {stop for _, _, stop, out in cases if out.finish_reason == "stop"}
    if stopped != set(STOPS) - NEVER_HIT:
        raise ValueError(f"the fixtures no longer hit every stop string: {sorted(stopped)}")
    return cases


def _http_completion(http_url: str, prompt: str, sampling: dict, stop: str) -> dict:
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "stop": [stop],
            **sampling}
    req = urllib.request.Request(f"{http_url}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def assert_served_text_equals_offline(target: str, http_url: str, cases) -> None:
    mismatches = []
    with TandemClient(target, timeout=120) as client:
        for prompt, sampling, stop, want in cases:
            whole = client.generate(prompt, max_tokens=MAX_TOKENS, stop=[stop], **sampling)
            with client.stream(prompt, max_tokens=MAX_TOKENS, stop=[stop], **sampling) as s:
                streamed = "".join(d.text for d in s)
                streamed_result = s.result
            http = _http_completion(http_url, prompt, sampling, stop)["choices"][0]
            got = {"grpc": (whole.text, whole.token_ids, whole.finish_reason),
                   "grpc-stream": (streamed, streamed_result.token_ids, streamed_result.finish_reason),
                   "http": (http["text"], None, http["finish_reason"])}
            for path, (text, ids, reason) in got.items():
                if text != want.text or reason != want.finish_reason or (
                        ids is not None and ids != want.token_ids):
                    mismatches.append((path, prompt, sampling, stop, text, want.text))
    assert not mismatches, mismatches[:6]
