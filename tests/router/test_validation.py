"""Bad input gets INVALID_ARGUMENT naming the field, before the engine is touched."""
from __future__ import annotations

import grpc
import pytest

from protos.tandem.v1 import generate_pb2
from router.convert import RawRequest
from router.errors import FIELD_METADATA_KEY, InvalidRequest
from router.validation import Limits, RequestValidator


def _req(**kw):
    sampling = kw.pop("sampling", {})
    req = generate_pb2.GenerateRequest(sampling=generate_pb2.SamplingParams(**sampling), **kw)
    if "text" not in kw and "token_ids" not in kw and not kw.pop("no_prompt", False):
        req.text = "Once upon a time"
    return req


BAD_REQUESTS = [
    ("empty text prompt", _req(text=""), "prompt.text"),
    ("no prompt", generate_pb2.GenerateRequest(), "prompt"),
    ("empty token ids", _req(token_ids=generate_pb2.TokenIds(ids=[])), "prompt.token_ids"),
    ("token id past vocab", _req(token_ids=generate_pb2.TokenIds(ids=[1, 600])), "prompt.token_ids[1]"),
    ("negative token id", _req(token_ids=generate_pb2.TokenIds(ids=[-3])), "prompt.token_ids[0]"),
    ("prompt too long", _req(token_ids=generate_pb2.TokenIds(ids=[5] * 512)), "prompt.token_ids"),
    ("text too long", _req(text="once upon a time " * 200), "prompt.text"),
    ("prompt plus max_tokens too long", _req(sampling={"max_tokens": 510}), "sampling.max_tokens"),
    ("negative temperature", _req(sampling={"temperature": -0.5}), "sampling.temperature"),
    ("nan temperature", _req(sampling={"temperature": float("nan")}), "sampling.temperature"),
    ("top_p zero", _req(sampling={"top_p": 0.0}), "sampling.top_p"),
    ("top_p above one", _req(sampling={"top_p": 1.5}), "sampling.top_p"),
    ("top_k zero", _req(sampling={"top_k": 0}), "sampling.top_k"),
    ("max_tokens zero", _req(sampling={"max_tokens": 0}), "sampling.max_tokens"),
    ("negative seed", _req(sampling={"seed": -1}), "sampling.seed"),
    ("empty stop string", _req(sampling={"stop": ["ok", ""]}), "sampling.stop[1]"),
    ("too many stop strings", _req(sampling={"stop": ["x"] * 17}), "sampling.stop"),
    ("stop token past vocab", _req(sampling={"stop_token_ids": [9999]}), "sampling.stop_token_ids[0]"),
    ("presence penalty above 2", _req(sampling={"presence_penalty": 2.5}), "sampling.presence_penalty"),
    ("frequency penalty below -2", _req(sampling={"frequency_penalty": -2.01}), "sampling.frequency_penalty"),
    ("nan frequency penalty", _req(sampling={"frequency_penalty": float("nan")}), "sampling.frequency_penalty"),
    ("zero repetition penalty", _req(sampling={"repetition_penalty": 0.0}), "sampling.repetition_penalty"),
    ("min_tokens above max_tokens", _req(sampling={"min_tokens": 9, "max_tokens": 8}), "sampling.min_tokens"),
    ("negative min_tokens", _req(sampling={"min_tokens": -1}), "sampling.min_tokens"),
    ("logit bias past vocab", _req(sampling={"logit_bias": {600: 1.0}}), "sampling.logit_bias[600]"),
    ("logit bias above 100", _req(sampling={"logit_bias": {5: 100.5}}), "sampling.logit_bias[5]"),
    ("unknown codec", _req(codec="zfp-9"), "codec"),
    ("bad request id", _req(request_id="has space"), "request_id"),
    ("bad tenant", _req(tenant="t/1"), "tenant"),
]


@pytest.mark.parametrize("name, req, field", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_is_invalid_argument_naming_the_field(stub, on_engine, engine_idle, name, req,
                                                        field):
    steps_before = on_engine(lambda e: e.stats["steps"])
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(req, timeout=10))
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(f"{field}: ")
    assert (FIELD_METADATA_KEY, field) in tuple(err.trailing_metadata())
    assert on_engine(lambda e: (e.stats["steps"], len(e.requests))) == (steps_before, 0)


def test_good_values_at_the_edges_are_accepted(stub):
    req = _req(token_ids=generate_pb2.TokenIds(ids=[1] + [300] * 505), codec="raw",
               request_id="edge.case:1-A_b", tenant="tenant-1.x",
               sampling={"max_tokens": 6, "temperature": 0.0, "top_p": 1.0, "top_k": 1,
                         "seed": 0, "stop_token_ids": [511], "presence_penalty": -2.0,
                         "frequency_penalty": 2.0, "repetition_penalty": 1e-3, "min_tokens": 6,
                         "logit_bias": {0: -100.0, 511: 100.0}})
    msgs = list(stub.Generate(req, timeout=30))
    assert msgs[-1].finished.usage.prompt_tokens == 506
    assert msgs[-1].request_id == "edge.case:1-A_b"


def _validator(codecs=("raw",)):
    return RequestValidator(Limits(vocab_size=100, max_model_len=64, codecs=frozenset(codecs),
                                   max_prompt_chars=50),
                            encode=lambda text: [1] + [ord(c) % 100 for c in text])


def test_validator_applies_engine_defaults_and_deadline():
    req = _validator().validate(RawRequest(prompt_text="hi", deadline_ms=250), now=100.0)
    assert req.prompt_token_ids == [1, ord("h") % 100, ord("i") % 100]
    assert (req.sampling.temperature, req.sampling.top_p, req.sampling.top_k,
            req.sampling.max_tokens, req.sampling.seed) == (1.0, 1.0, -1, 16, None)
    assert req.deadline == pytest.approx(100.25) and req.arrival_time == 100.0
    assert len(req.request_id) == 32   # assigned when the client sent none
    from engine.sampling_params import SamplingParams
    assert SamplingParams.from_dict(req.sampling.to_dict()).max_tokens == 16


def test_validator_keeps_token_prompts_as_given_and_no_deadline_when_unset():
    req = _validator().validate(RawRequest(prompt_token_ids=[7, 8], request_id="r1"))
    assert req.prompt_token_ids == [7, 8] and req.deadline is None and req.request_id == "r1"


def test_validator_rejects_text_over_the_character_cap_before_tokenizing():
    calls = []
    v = RequestValidator(Limits(100, 64, frozenset(), 10), encode=lambda t: calls.append(t) or [1])
    with pytest.raises(InvalidRequest) as info:
        v.validate(RawRequest(prompt_text="x" * 11))
    assert info.value.field == "prompt.text" and not calls
