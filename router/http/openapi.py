"""The published OpenAPI document (``GET /openapi.json``, ``router/http/openapi.json``),
generated: request bodies from ``router.http.request_models`` (what the parser reads),
routes and response shapes from the tables below.

``python -m router.http.openapi`` rewrites the committed file (``make openapi``); a test
fails while the committed file differs from what this module generates.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from router.http.request_models import MODELS

PATH = Path(__file__).with_name("openapi.json")
_ALL_ERRORS = (400, 401, 403, 404, 408, 409, 413, 429, 503, 504)


def _ref(name: str, kind: str = "schemas") -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _obj(properties: dict, required: list[str] | None = None, **extra) -> dict:
    out: dict = {"type": "object"}
    if required:
        out["required"] = required
    out["properties"] = properties
    out.update(extra)
    return out


_STR, _INT, _NUM = {"type": "string"}, {"type": "integer"}, {"type": "number"}
_REASON = {"type": "string", "enum": ["stop", "length", "abort"]}


def _op(op_id: str, ok: str, ok_content: dict, errors: tuple[int, ...] = (), *, body: str | None = None,
        secured: bool = False, headers: bool = False, parameters: list | None = None) -> dict:
    op: dict = {"operationId": op_id, "security": [{"bearer": []}] if secured else []}
    params = [_ref(h, "parameters") for h in ("RequestId", "Tenant", "Deadline")] if headers else []
    params += parameters or []
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    op["responses"] = {"200": {"description": ok, "content": ok_content},
                       **{str(code): _ref("Error", "responses") for code in errors}}
    return op


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _generation(op_id: str, ok: str, response: str, body: str) -> dict:
    content = {**_json(_ref(response)), "text/event-stream": {"schema": _STR}}
    return {"post": _op(op_id, ok, content, _ALL_ERRORS, body=body, secured=True, headers=True)}


def _paths() -> dict:
    return {
        "/health": {"get": _op("health", "the backend can serve requests", _json(_obj({"status": _STR})), (503,))},
        "/openapi.json": {"get": _op("openapi", "this document", _json({"type": "object"}))},
        "/v1/models": {"get": _op("listModels", "the served model", _json(_ref("ModelList")), (401, 400),
                                  secured=True)},
        "/v1/models/{model}": {"get": _op(
            "getModel", "the model", _json(_ref("Model")), (401, 404, 400), secured=True,
            parameters=[{"name": "model", "in": "path", "required": True, "schema": _STR}])},
        "/v1/completions": _generation(
            "createCompletion", "a completion, or an SSE stream of chunks ending with 'data: [DONE]' "
            "when stream is true", "Completion", "CompletionRequest"),
        "/v1/chat/completions": _generation(
            "createChatCompletion", "a chat completion, or an SSE stream of chunks when stream is true",
            "ChatCompletion", "ChatRequest"),
        "/version": {"get": _op("version", "the Tandem version", _json(_obj({"version": _STR})))},
        "/metrics": {"get": _op("metrics", "Prometheus text exposition (docs/metrics.md), as on the "
                                "metrics port", {"text/plain": {"schema": _STR}})},
        "/tokenize": {"post": _op(
            "tokenize", "the token ids the router would give this prompt",
            _json(_obj({"count": _INT, "max_model_len": _INT, "tokens": {"type": "array", "items": _INT}})),
            (400, 401, 403, 413), body="TokenizeRequest", secured=True)},
        "/detokenize": {"post": _op("detokenize", "the text of the token ids", _json(_obj({"prompt": _STR})),
                                    (400, 401, 403, 413), body="DetokenizeRequest", secured=True)},
    }


def _header(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


def _choice_list(required: list[str], properties: dict) -> dict:
    return {"type": "array", "items": _obj(properties, required)}


def _response(kind: str, choice_required: list[str], choice: dict) -> dict:
    return _obj({"id": _STR, "object": {"type": "string", "enum": [kind]}, "created": _INT, "model": _STR,
                 "choices": _choice_list(choice_required, choice), "usage": _ref("Usage")},
                ["id", "object", "created", "model", "choices", "usage"])


def _response_schemas() -> dict:
    nullable_obj = {"type": "object", "nullable": True}
    completion_logprobs = {**nullable_obj, "properties": {
        "tokens": {"type": "array", "items": _STR},
        "token_logprobs": {"type": "array", "items": {**_NUM, "nullable": True}},
        "top_logprobs": {"type": "array", "items": {"type": "object", "additionalProperties": _NUM,
                                                    "nullable": True}},
        "text_offset": {"type": "array", "items": _INT}}}
    chat_logprobs = {**nullable_obj, "properties": {"content": {"type": "array", "items": _obj({
        "token": _STR, "logprob": _NUM, "bytes": {"type": "array", "items": _INT},
        "top_logprobs": {"type": "array", "items": {"type": "object"}}})}}}
    return {
        "Error": _obj({"error": _obj({"message": _STR, "type": _STR, "param": {**_STR, "nullable": True},
                                      "code": {**_STR, "nullable": True}}, ["message", "type"])}, ["error"]),
        "Model": _obj({"id": _STR, "object": _STR, "created": _INT, "owned_by": _STR, "max_model_len": _INT,
                       "vocab_size": _INT}, ["id", "object"]),
        "ModelList": _obj({"object": _STR, "data": {"type": "array", "items": _ref("Model")}}, ["object", "data"]),
        "Usage": _obj({"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT,
                       "prompt_tokens_details": _obj({"cached_tokens": _INT})},
                      ["prompt_tokens", "completion_tokens", "total_tokens"]),
        "Completion": _response("text_completion", ["index", "text", "finish_reason"], {
            "index": _INT, "text": _STR, "finish_reason": _REASON, "logprobs": completion_logprobs}),
        "ChatCompletion": _response("chat.completion", ["index", "message", "finish_reason"], {
            "index": _INT, "message": _obj({"role": _STR, "content": _STR}), "finish_reason": _REASON,
            "logprobs": chat_logprobs}),
    }


def build() -> dict:
    """The whole document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "Tandem OpenAI-compatible API", "version": "1.0.0",
                 "description": "The subset of the OpenAI API that the Tandem router serves beside "
                 "gRPC (docs/openai.md). Errors use OpenAI's error JSON shape. Generated by "
                 "router/http/openapi.py from the request models the parser reads."},
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "an API key (router.auth)"}},
            "parameters": {
                "RequestId": _header("X-Request-Id", {**_STR, "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                                     "the request id (assigned when absent); echoed in the response"),
                "Tenant": _header("X-Tandem-Tenant", {**_STR, "pattern": "^[A-Za-z0-9._-]{0,64}$"},
                                  "the tenant when auth is off; with auth on it must match the key's tenant"),
                "Deadline": _header("X-Tandem-Deadline-Ms", {**_INT, "minimum": 0},
                                    "a time budget in ms from receipt")},
            "responses": {"Error": {"description": "an error in OpenAI's shape",
                                    "content": _json(_ref("Error"))}},
            "schemas": {**_response_schemas(), **{m.name: m.openapi() for m in MODELS}},
        },
        "security": [{"bearer": []}],
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
    sys.stdout.write(f"wrote {PATH}\n")
