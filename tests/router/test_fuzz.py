"""Thousands of malformed requests against a real router (auth on) over a real engine: the
OpenAPI document through schemathesis, raw HTTP bodies, headers and bytes on the socket,
and gRPC messages (undecodable bytes and random field values). None may get a 5xx (or
INTERNAL/UNKNOWN), crash the server or hang; afterwards it is healthy, serves a normal
request and holds no KV."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import grpc
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                 response_schema_conformance, status_code_conformance)

from frontdoor_helpers import KEY_A, router_config, sample, scrape, start_router, write_keys

from router.config import LimitsConfig
from protos.tandem.v1 import generate_pb2
from router.http.server import OPENAPI_PATH

COUNTS = {"http": 0, "socket": 0, "grpc": 0, "schemathesis": 0}
FUZZ = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
AUTH = {"Authorization": f"Bearer {KEY_A}"}
_GOOD_GRPC = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
              grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.DEADLINE_EXCEEDED}


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    keys = write_keys(tmp_path_factory.mktemp("fuzz"))
    limits = LimitsConfig(max_tokens=8, max_prompt_tokens=64, max_body_bytes=32 * 1024)
    r = start_router(config=router_config(keys, limits=limits))
    yield r
    text = scrape(r.metrics_url)
    r.stop()
    assert sample(text, "tandem_requests_total", status="internal") == 0


def test_schemathesis_against_the_published_openapi_document(router):
    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI_PATH.read_text()))
    cases = st.one_of([op.ok().as_strategy(generation_mode=mode)
                       for op in schema.get_all_operations()
                       for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)])
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]

    @settings(FUZZ, max_examples=300)
    @given(case=cases)
    def run(case):
        case.headers = {**(case.headers or {}), **AUTH}
        response = case.call(base_url=router.http_url, timeout=15)
        case.validate_response(response, checks=checks)
        COUNTS["schemathesis"] += 1
    run()


def _json_values():
    scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
               | st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


_FIELDS = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature",
           "top_p", "top_k", "seed", "stop", "stream", "stream_options", "n", "logprobs", "echo",
           "ignore_eos", "stop_token_ids", "response_format", "tools", "user", "presence_penalty",
           "frequency_penalty", "repetition_penalty", "min_tokens", "logit_bias", "tokens",
           "add_special_tokens"]
_NEAR_VALID = st.fixed_dictionaries(
    {"prompt": st.sampled_from(["Once upon a time", [1, 2, 3]]),
     "messages": st.just([{"role": "user", "content": "Hi"}]), "max_tokens": st.just(2)},
    optional={name: _json_values() for name in _FIELDS
              if name not in ("prompt", "messages", "max_tokens")})
_BODIES = st.one_of(st.binary(max_size=300), _json_values().map(lambda v: json.dumps(v).encode()),
                    _NEAR_VALID.map(lambda v: json.dumps(v).encode()),
                    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@settings(FUZZ, max_examples=800)
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/models",
                             "/v1/models/stories260K", "/health", "/v1/x", "/v1/completions/x",
                             "/tokenize", "/detokenize", "/version"]),
       method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]), body=_BODIES,
       auth=st.sampled_from([AUTH, AUTH, {}, {"Authorization": "Bearer nope-0123456789abcdef"}]),
       extra=st.dictionaries(st.sampled_from(["X-Request-Id", "X-Tandem-Tenant",
                                              "X-Tandem-Deadline-Ms", "Content-Type"]),
                             _HEADER_TEXT, max_size=2))
def test_malformed_http_requests_never_get_a_server_error(router, path, method, body, auth, extra):
    req = urllib.request.Request(router.http_url + path, data=body if method != "GET" else None,
                                 method=method, headers={**auth, **extra})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, payload = err.code, err.read()
    assert status < 500, payload[:300]
    if status >= 400:
        assert "error" in json.loads(payload)
    COUNTS["http"] += 1


@settings(FUZZ, max_examples=200)
@given(data=st.one_of(st.binary(min_size=1, max_size=400),
                      st.builds(lambda a, b: a + b, st.sampled_from(
                          [b"POST /v1/completions HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n",
                           b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
                           b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"]),
                          st.binary(max_size=200))))
def test_garbage_on_the_http_socket_is_answered_4xx_or_dropped(router, data):
    with socket.create_connection(("127.0.0.1", router.server.http_port), timeout=15) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    if reply.startswith(b"HTTP/1."):
        assert int(reply.split(b" ", 2)[1]) < 500, reply[:300]
    COUNTS["socket"] += 1


_I64 = st.integers(-(2**63), 2**63 - 1)


def _proto_requests():
    sampling = st.fixed_dictionaries({}, optional={
        "temperature": st.floats(), "top_p": st.floats(), "top_k": _I64,
        "max_tokens": st.one_of(st.integers(-5, 12), _I64), "seed": _I64,
        "stop": st.lists(st.text(max_size=300), max_size=20),
        "stop_token_ids": st.lists(_I64, max_size=70),
        "ignore_eos": st.booleans()})

    def build(text, ids, s, rid, tenant, codec, deadline):
        req = generate_pb2.GenerateRequest(request_id=rid, tenant=tenant, codec=codec,
                                           deadline_ms=deadline)
        if text is not None:
            req.text = text
        elif ids is not None:
            req.token_ids.ids.extend(ids)
        for key, value in s.items():
            if key in ("stop", "stop_token_ids"):
                getattr(req.sampling, key).extend(value)
            else:
                setattr(req.sampling, key, value)
        return req.SerializeToString()
    return st.builds(build, st.none() | st.text(max_size=300),
                     st.none() | st.lists(_I64, max_size=80), sampling,
                     st.text(max_size=140), st.sampled_from(["", "alpha", "bravo", "x" * 70]),
                     st.sampled_from(["", "raw", "nope"]), st.integers(0, 2**32 - 1))


@pytest.fixture(scope="module")
def raw_generate(router):
    channel = grpc.insecure_channel(router.target)
    yield channel.unary_stream("/tandem.v1.Tandem/Generate")   # bytes in, bytes out
    channel.close()


@settings(FUZZ, max_examples=1000)
@given(payload=st.one_of(st.binary(max_size=300), _proto_requests(), _proto_requests()),
       auth=st.sampled_from([AUTH, AUTH, AUTH, {}, {"authorization": "Bearer x"}]))
def test_malformed_grpc_messages_never_get_internal_errors(raw_generate, payload, auth):
    metadata = [(k.lower(), v) for k, v in auth.items()]
    call = raw_generate(payload, timeout=15, metadata=metadata)
    try:
        for _ in call:
            pass
        code = grpc.StatusCode.OK
    except grpc.RpcError as err:
        code = err.code()
    assert code in _GOOD_GRPC, (code, call.details())
    COUNTS["grpc"] += 1


def test_a_grpc_message_over_the_size_limit_is_resource_exhausted(raw_generate):
    big = generate_pb2.GenerateRequest(text="x" * (5 << 20)).SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        list(raw_generate(big, timeout=30, metadata=[("authorization", AUTH["Authorization"])]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_router_is_healthy_and_idle_after_the_fuzzing(router):
    assert sum(COUNTS.values()) >= 2000, COUNTS
    assert json.loads(scrape(router.http_url + "/health"))["status"] == "ok"
    req = urllib.request.Request(router.http_url + "/v1/completions", headers=AUTH,
                                 data=json.dumps({"prompt": "Once upon a time",
                                                  "max_tokens": 4}).encode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read())["usage"]["completion_tokens"] == 4
    router.wait_idle()

