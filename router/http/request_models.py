"""The OpenAI request bodies the router reads, declared once.

The parser (``router.http.openai_api``) reads every parameter through these declarations:
``field(model, name)`` fails for a name a model does not declare, and the JSON type it
checks comes from the declared schema. The published OpenAPI document
(``router.http.openapi``) is generated from the same declarations, so the two cannot drift.
Value ranges are checked by ``router.validation`` (as for gRPC) and documented here.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_LOGPROBS = 20         # engine.sampling_params.MAX_LOGPROBS (the router does not import the engine)
MAX_N = 16                # samples of one request (n, best_of)
MAX_STOP = 16             # router.validation.MAX_STOP_STRINGS


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    schema: dict
    description: str = ""
    required: bool = False

    @property
    def kind(self) -> str | None:
        """The JSON type the parser checks ("int", "number", "bool", "str", "dict"), or
        None for a field the parser inspects itself (several shapes)."""
        return {"integer": "int", "number": "number", "boolean": "bool", "string": "str",
                "object": "dict"}.get(self.schema.get("type"))

    def openapi(self) -> dict:
        out = dict(self.schema)
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class RequestModel:
    name: str                          # the OpenAPI component
    fields: tuple[Field, ...]

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} declares no field {name!r} (router/http/request_models.py)")

    def openapi(self) -> dict:
        out: dict = {"type": "object"}
        required = [f.name for f in self.fields if f.required]
        if required:
            out["required"] = required
        out["properties"] = {f.name: f.openapi() for f in self.fields}
        return out


def _opt(type_: str, **schema) -> dict:
    return {"type": type_, **schema, "nullable": True}


def _refused(neutral: str) -> dict:
    return {"nullable": True, "description": f"not supported: refused with 400 unless {neutral}"}


_STOP = {"nullable": True, "oneOf": [{"type": "string"},
                                     {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP}]}
_MESSAGES = {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}}

COMMON = (
    Field("model", {"type": "string"}, "the served model's name (another is 404 model_not_found)"),
    Field("max_tokens", _opt("integer", minimum=1)),
    Field("temperature", _opt("number", minimum=0)),
    Field("top_p", _opt("number", exclusiveMinimum=True, minimum=0, maximum=1)),
    Field("top_k", _opt("integer"), "extension: -1 disables"),
    Field("seed", _opt("integer", minimum=0), "sample i of n uses seed + i"),
    Field("stop", _STOP),
    Field("stop_token_ids", _opt("array", items={"type": "integer"}), "extension"),
    Field("ignore_eos", _opt("boolean"), "extension"),
    Field("presence_penalty", _opt("number", minimum=-2, maximum=2),
          "subtracted once from the logit of every token already in the output"),
    Field("frequency_penalty", _opt("number", minimum=-2, maximum=2),
          "subtracted from a token's logit once per occurrence in the output"),
    Field("repetition_penalty", _opt("number", exclusiveMinimum=True, minimum=0),
          "extension (vLLM): tokens of the prompt or output, logit / p if > 0 else * p; 1 = off"),
    Field("min_tokens", _opt("integer", minimum=0),
          "extension (vLLM): no EOS, stop token or stop string before this many tokens"),
    Field("logit_bias", _opt("object", additionalProperties={"type": "number", "minimum": -100, "maximum": 100}),
          "token id (as a string) -> added to its logit"),
    Field("stream", _opt("boolean")),
    Field("stream_options", _opt("object", properties={"include_usage": {"type": "boolean"}})),
    Field("n", _opt("integer", minimum=1, maximum=MAX_N),
          "choices, sharing one prefill of the prompt; each sample is admitted as a request"),
    Field("user", {"type": "string"}, "ignored"),
    Field("suffix", _refused("null or empty")),
    Field("tools", _refused("null or empty")),
    Field("tool_choice", _refused("null or 'none'")),
    Field("functions", _refused("null or empty")),
    Field("function_call", _refused("null or 'none'")),
    Field("parallel_tool_calls", _refused("null or a bool")),
)

COMPLETION = RequestModel("CompletionRequest", COMMON + (
    Field("prompt", {"oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
        {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string", "minLength": 1}}]},
        required=True),
    Field("echo", _opt("boolean"), "the prompt first in text and, with logprobs, its logprobs (streamed: a first chunk)"),
    Field("logprobs", _opt("integer", minimum=0, maximum=MAX_LOGPROBS),
          "each generated token's logprob and this many most likely alternatives (raw model logits, as vLLM)"),
    Field("best_of", _opt("integer", minimum=1, maximum=MAX_N),
          "samples drawn (>= n, not with stream); the n of highest cumulative logprob are returned"),
))

CHAT = RequestModel("ChatRequest", COMMON + (
    Field("messages", _MESSAGES, required=True),
    Field("max_completion_tokens", _opt("integer", minimum=1)),
    Field("logprobs", _opt("boolean"), "each generated token's logprob (raw model logits, as vLLM)"),
    Field("top_logprobs", _opt("integer", minimum=0, maximum=MAX_LOGPROBS),
          "alternatives per token; needs logprobs: true"),
    Field("response_format", _opt("object", properties={"type": {"type": "string", "enum": ["text"]}}),
          "only {'type': 'text'}"),
    Field("best_of", _refused("null"), "a completions parameter"),
))

CHAT_MESSAGE = RequestModel("ChatMessage", (
    Field("role", {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
          required=True),
    Field("content", {"nullable": True, "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "object", "required": ["type", "text"], "properties": {
            "type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}}]}, required=True),
))

TOKENIZE = RequestModel("TokenizeRequest", (
    Field("prompt", {"type": "string"}, "text to tokenize (or messages)"),
    Field("messages", {"type": "array", "items": {"$ref": "#/components/schemas/ChatMessage"}},
          "chat messages, rendered with the chat template"),
    Field("add_special_tokens", _opt("boolean"), "BOS as for a completion; default true"),
))

DETOKENIZE = RequestModel("DetokenizeRequest", (
    Field("tokens", {"type": "array", "items": {"type": "integer"}}, required=True),
))

MODELS = (COMPLETION, CHAT, CHAT_MESSAGE, TOKENIZE, DETOKENIZE)
