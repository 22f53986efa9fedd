"""The OpenAI-compatible HTTP API with the official ``openai`` client, on a real router over a
real stories260K engine (the disaggregated cluster is covered by test_http_cluster.py)."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/router: the helpers

from frontdoor_helpers import (make_llm, router_config, sample, scrape,  # noqa: E402
                               start_router, wait_until)

from router.config import LimitsConfig  # noqa: E402
from router.http import openapi  # noqa: E402
from router.http.chat import ChatMessage, render_chat  # noqa: E402
from tandem_client import TandemClient  # noqa: E402

PROMPT = "Once upon a time"
LONG_PROMPT = "Lily and Ben went to the park to play with their red ball. " * 6
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def router():
    r = start_router(config=router_config(limits=LimitsConfig(max_body_bytes=64 * 1024,
                                                              max_tokens=200)))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def oai(router):
    client = openai.OpenAI(base_url=f"{router.http_url}/v1", api_key="unused", max_retries=0,
                           timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(router):
    client = TandemClient(router.target, timeout=60)
    yield client
    client.close()


def test_completions_equal_the_grpc_path_streamed_or_not_with_usage(oai, grpc_client):
    ref = grpc_client.generate(PROMPT, max_tokens=24, temperature=0)
    whole = oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=24, temperature=0)
    assert whole.choices[0].text == ref.text
    assert whole.choices[0].finish_reason == ref.finish_reason
    assert whole.usage.prompt_tokens == ref.usage.prompt_tokens
    assert whole.usage.completion_tokens == len(ref.token_ids) == 24
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 24
    chunks = list(oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=24,
                                         temperature=0, stream=True,
                                         stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    ids = [t for c in chunks if c.choices for t in c.choices[0].model_extra["token_ids"]]
    assert ids == ref.token_ids
    ids_ref = grpc_client.generate(token_ids=[1, 400, 300], max_tokens=5, temperature=0)
    by_ids = oai.completions.create(model="stories260K", prompt=[1, 400, 300], max_tokens=5,
                                    temperature=0)
    assert by_ids.choices[0].text == ids_ref.text and by_ids.usage.prompt_tokens == 3


def test_penalties_and_constraints_reach_the_engine_through_http_and_grpc(oai, grpc_client):
    """Each one as the offline engine applies it (tests/engine/test_logits_processing.py holds
    the reference), through the ``openai`` client and the SDK alike, and not a no-op here."""
    from engine import SamplingParams
    llm = make_llm()
    ids = llm.tokenizer.encode(LONG_PROMPT)
    eos = min(llm.engine.eos_token_ids)
    for extra in ({"presence_penalty": 1.5, "frequency_penalty": 0.5}, {"repetition_penalty": 1.4},
                  {"min_tokens": 6, "logit_bias": {eos: 100.0}}):
        offline = llm.generate([ids], SamplingParams(max_tokens=24, temperature=0, **extra))[0]
        plain = llm.generate([ids], SamplingParams(max_tokens=24, temperature=0))[0]
        assert offline.token_ids != plain.token_ids
        via_sdk = grpc_client.generate(LONG_PROMPT, max_tokens=24, temperature=0, **extra)
        assert via_sdk.token_ids == offline.token_ids
        body = {k: ({str(t): b for t, b in v.items()} if k == "logit_bias" else v)
                for k, v in extra.items()}
        oai_extra = {k: v for k, v in body.items() if k in ("presence_penalty", "frequency_penalty",
                                                           "logit_bias")}
        vllm_extra = {k: v for k, v in body.items() if k not in oai_extra}
        whole = oai.completions.create(model="stories260K", prompt=LONG_PROMPT, max_tokens=24,
                                       temperature=0, extra_body=vllm_extra, **oai_extra)
        assert whole.choices[0].text == offline.text
        assert whole.usage.completion_tokens == len(offline.token_ids)
    held = grpc_client.generate(LONG_PROMPT, max_tokens=24, temperature=0, min_tokens=6,
                                logit_bias={eos: 100.0})
    assert len(held.token_ids) == 7 and held.finish_reason == "stop"


def test_logprobs_equal_hf_transformers_log_softmax(router):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cluster"))
    from logprobs_check import assert_logprobs_match_hf
    assert_logprobs_match_hf(router.target, router.http_url)


def test_chat_uses_the_default_template_and_equals_the_grpc_path(oai, grpc_client):
    messages = [{"role": "system", "content": "You tell stories."},
                {"role": "user", "content": "Tell me about a cat."}]
    prompt = render_chat([ChatMessage(**m) for m in messages], None)
    assert prompt == "System: You tell stories.\nUser: Tell me about a cat.\nAssistant:"
    ref = grpc_client.generate(prompt, max_tokens=20, temperature=0)
    whole = oai.chat.completions.create(model="stories260K", messages=messages, max_tokens=20,
                                        temperature=0)
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content == ref.text
    assert whole.usage.prompt_tokens == ref.usage.prompt_tokens
    chunks = list(oai.chat.completions.create(model="stories260K", messages=messages,
                                              max_completion_tokens=20, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ref.text
    assert chunks[-1].usage.completion_tokens == 20


def test_chat_without_max_tokens_runs_to_the_end_of_the_context_or_a_stop(oai):
    out = oai.chat.completions.create(model="stories260K", temperature=0,
                                      messages=[{"role": "user", "content": "Hi"}])
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens >= 1


def test_a_models_chat_template_is_used_when_it_has_one():
    llm = make_llm()
    llm.tokenizer.chat_template = CHATML
    r = start_router(llm)
    try:
        messages = [{"role": "user", "content": "Hello"}]
        text = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
        assert render_chat([ChatMessage("user", "Hello")], CHATML) == text
        with TandemClient(r.target) as grpc_client:
            ref = grpc_client.generate(text, max_tokens=8, temperature=0)
        with openai.OpenAI(base_url=f"{r.http_url}/v1", api_key="x", max_retries=0) as client:
            out = client.chat.completions.create(model="stories260K", messages=messages,
                                                 max_tokens=8, temperature=0)
        assert out.choices[0].message.content == ref.text
        assert out.usage.prompt_tokens == ref.usage.prompt_tokens
    finally:
        r.stop()


def test_cached_prompt_tokens_are_reported(oai):
    first = oai.completions.create(model="stories260K", prompt=LONG_PROMPT, max_tokens=2,
                                   temperature=0)
    again = oai.completions.create(model="stories260K", prompt=LONG_PROMPT, max_tokens=2,
                                   temperature=0)
    assert first.usage.prompt_tokens == again.usage.prompt_tokens > 32
    assert again.usage.prompt_tokens_details.cached_tokens >= 32


def _raw(router, method: str, path: str, body=None, headers=None, data=None):
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.request(method, router.http_url + path, json=body, data=data,
                                 headers=headers or {}) as resp:
                text = await resp.text()
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, text
    return asyncio.run(go())


@pytest.mark.parametrize("body, param", [
    ({"prompt": "Hi", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "Hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "Hi", "max_tokens": 201}, "max_tokens"),
    ({"prompt": "Hi", "temperature": -1}, "temperature"),
    ({"prompt": "Hi", "top_p": 0}, "top_p"),
    ({"prompt": "Hi", "n": 17}, "n"),
    ({"prompt": "Hi", "n": 0}, "n"),
    ({"prompt": "Hi", "n": 3, "best_of": 2}, "best_of"),
    ({"prompt": "Hi", "n": 2, "best_of": 3, "stream": True}, "best_of"),
    ({"prompt": "Hi", "logprobs": 21}, "logprobs"),
    ({"prompt": "Hi", "logprobs": True}, "logprobs"),
    ({"prompt": "Hi", "presence_penalty": 2.5}, "presence_penalty"),
    ({"prompt": "Hi", "frequency_penalty": "1"}, "frequency_penalty"),
    ({"prompt": "Hi", "repetition_penalty": 0}, "repetition_penalty"),
    ({"prompt": "Hi", "min_tokens": 50, "max_tokens": 10}, "min_tokens"),
    ({"prompt": "Hi", "logit_bias": {"abc": 1}}, "logit_bias"),
    ({"prompt": "Hi", "logit_bias": {"5": 101}}, "logit_bias"),
    ({"prompt": "Hi", "logit_bias": {"99999": 1}}, "logit_bias"),
    ({"prompt": "Hi", "logit_bias": {"5": "high"}}, "logit_bias"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, 99999]}, "prompt"),
    ({"prompt": "Hi", "stop": [1]}, "stop"),
    ({"prompt": "Hi", "stream_options": {"include_usage": True}}, "stream_options"),
    ({}, "prompt"),
])
def test_bad_completion_parameters_are_400_naming_the_parameter(router, body, param):
    status, _, text = _raw(router, "POST", "/v1/completions", body)
    assert status == 400, text
    err = json.loads(text)["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert err["message"]


@pytest.mark.parametrize("data", [
    b'{"prompt": "\\ud800 once"}', b'{"prompt": "x", "stop": ["\\udfff"]}',
    b'{"messages": [{"role": "user", "content": "hi \\ud83d"}]}'])
def test_a_lone_surrogate_anywhere_in_the_body_is_a_400_not_a_500(router, data):
    path = "/v1/chat/completions" if b"messages" in data else "/v1/completions"
    status, _, text = _raw(router, "POST", path, data=data)
    assert status == 400, text
    assert "surrogate" in json.loads(text)["error"]["message"]
    status, _, text = _raw(router, "POST", "/v1/completions",         # a valid pair is fine
                           data=b'{"prompt": "\\ud83d\\ude00 once", "max_tokens": 2}')
    assert status == 200, text


def test_http_errors_use_openai_shapes_and_codes(router):
    assert _raw(router, "POST", "/v1/completions", data=b"{not json")[0] == 400
    assert _raw(router, "POST", "/v1/completions", data=b"[1, 2]")[0] == 400
    status, _, text = _raw(router, "POST", "/v1/completions", {"model": "gpt-4", "prompt": "x"})
    assert status == 404 and json.loads(text)["error"]["code"] == "model_not_found"
    assert _raw(router, "GET", "/v1/nothing")[0] == 404
    status, headers, text = _raw(router, "GET", "/v1/completions")
    assert status == 405 and "error" in json.loads(text)
    status, _, text = _raw(router, "POST", "/v1/completions", {"prompt": "x" * 70_000})
    assert status == 413 and json.loads(text)["error"]["message"]
    status, _, text = _raw(router, "POST", "/v1/chat/completions",
                           {"messages": [{"role": "wizard", "content": "x"}]})
    assert status == 400 and json.loads(text)["error"]["param"] == "messages[0].role"
    status, _, text = _raw(router, "POST", "/v1/completions", {"prompt": "x"},
                           {"X-Request-Id": "bad id!"})
    assert status == 400 and json.loads(text)["error"]["param"] == "X-Request-Id"


def test_models_health_openapi_and_request_ids(router, oai):
    models = oai.models.list()
    assert [m.id for m in models.data] == ["stories260K"]
    assert models.data[0].model_extra["max_model_len"] == 512
    assert oai.models.retrieve("stories260K").id == "stories260K"
    status, _, text = _raw(router, "GET", "/health")
    assert status == 200 and json.loads(text)["status"] == "ok"
    status, _, text = _raw(router, "GET", "/openapi.json")
    assert status == 200 and json.loads(text) == openapi.build()     # the generated document
    status, headers, text = _raw(router, "POST", "/v1/completions", {"prompt": "Hi"},
                                 {"X-Request-Id": "my-request-1"})
    assert status == 200 and headers.get("x-request-id") == "my-request-1", headers
    assert json.loads(text)["id"] == "cmpl-my-request-1"


def test_tokenize_and_detokenize_round_trip_as_the_router_tokenizes_requests(router, grpc_client):
    status, _, text = _raw(router, "POST", "/tokenize", {"prompt": PROMPT})
    assert status == 200, text
    tok = json.loads(text)
    ref = grpc_client.generate(PROMPT, max_tokens=1, temperature=0)
    assert tok["count"] == len(tok["tokens"]) == ref.usage.prompt_tokens
    assert tok["max_model_len"] == 512
    bare = json.loads(_raw(router, "POST", "/tokenize", {"prompt": PROMPT,
                                                         "add_special_tokens": False})[2])
    assert bare["tokens"] == tok["tokens"][1:]              # BOS only with special tokens
    status, _, text = _raw(router, "POST", "/detokenize", {"tokens": tok["tokens"]})
    assert status == 200 and json.loads(text)["prompt"] == PROMPT
    chat = json.loads(_raw(router, "POST", "/tokenize", {
        "messages": [{"role": "user", "content": PROMPT}]})[2])
    assert chat["count"] > tok["count"]                     # the template's framing
    for path, body, param in (("/tokenize", {"prompt": ""}, "prompt"),
                              ("/tokenize", {"prompt": 5}, "prompt"),
                              ("/detokenize", {"tokens": [1, 100000]}, "tokens"),
                              ("/detokenize", {"tokens": "abc"}, "tokens")):
        status, _, text = _raw(router, "POST", path, body)
        assert status == 400 and json.loads(text)["error"]["param"] == param, (path, body)


def test_version_and_metrics_are_served_on_the_api_port(router, oai):
    status, _, text = _raw(router, "GET", "/version")
    assert status == 200 and json.loads(text)["version"]
    oai.completions.create(model="stories260K", prompt=PROMPT, max_tokens=2)
    status, headers, text = _raw(router, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert sample(text, "tandem_requests_total", protocol="http", status="ok") >= 1
    assert sample(text, "tandem_requests_total", protocol="http", status="ok") == \
        sample(scrape(router.metrics_url), "tandem_requests_total", protocol="http", status="ok")


def test_a_client_that_disconnects_mid_stream_frees_the_requests_kv(router):
    router.wait_idle()
    before = sample(scrape(router.metrics_url), "tandem_requests_total", protocol="http",
                    status="cancelled")

    async def leave_early():
        async with aiohttp.ClientSession() as s:
            resp = await s.post(router.http_url + "/v1/completions", json={
                "prompt": PROMPT, "max_tokens": 190, "ignore_eos": True, "stream": True})
            assert resp.status == 200
            first = await resp.content.readline()
            assert first.startswith(b"data: ")
            resp.close()            # drop the connection with the stream still running
    asyncio.run(leave_early())
    router.wait_idle()
    wait_until(lambda: sample(scrape(router.metrics_url), "tandem_requests_total",
                              protocol="http", status="cancelled") == before + 1,
               what="the cancelled request counted")


def test_duplicate_request_id_in_flight_is_409(router):
    async def two():
        async with aiohttp.ClientSession() as s:
            body = {"prompt": PROMPT, "max_tokens": 190, "ignore_eos": True, "stream": True}
            hdrs = {"X-Request-Id": "twice"}
            first = await s.post(router.http_url + "/v1/completions", json=body, headers=hdrs)
            await first.content.readline()
            second = await s.post(router.http_url + "/v1/completions", json=body, headers=hdrs)
            status = second.status
            first.close()
            return status
    assert asyncio.run(two()) == 409
    router.wait_idle()


def test_stopped_backend_is_503_and_health_says_so():
    r = start_router()
    try:
        r.call(r.backend.close())
        status, headers, text = _raw(r, "POST", "/v1/completions", {"prompt": "Hi"})
        assert status == 503 and json.loads(text)["error"]["type"] == "service_unavailable_error"
        assert int(headers["retry-after"]) >= 1
        assert _raw(r, "GET", "/health")[0] == 503
    finally:
        r.stop()


def test_chat_templates_render_in_a_sandbox_and_failures_are_the_requests_fault():
    from router.errors import InvalidRequest
    msgs = [ChatMessage("user", "Hi")]
    refuse = "{% if messages[0].role == 'user' %}{{ raise_exception('no users') }}{% endif %}"
    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    for template in (refuse, escape, "{% for %}"):
        with pytest.raises(InvalidRequest) as info:
            render_chat(msgs, template)
        assert info.value.field == "messages"


def test_an_engine_failure_mid_stream_ends_the_sse_stream_with_an_error_chunk():
    llm = make_llm()
    real_step, calls = llm.engine.step, {"n": 0}

    def failing_step():   # fault injection: the engine dies on its fifth step
        calls["n"] += 1
        if calls["n"] > 4:
            raise RuntimeError("injected engine fault")
        return real_step()

    llm.engine.step = failing_step
    r = start_router(llm)
    try:
        status, _, text = _raw(r, "POST", "/v1/completions", {
            "prompt": PROMPT, "max_tokens": 100, "ignore_eos": True, "stream": True})
        assert status == 200
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert len(events) >= 2 and "[DONE]" not in events
        error = json.loads(events[-1])["error"]
        assert error["type"] == "service_unavailable_error"
        assert "injected engine fault" in error["message"]
    finally:
        r.stop()
