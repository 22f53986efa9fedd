"""OpenAI request bodies → ``RawRequest`` (structure and types only; values are checked by
``router.validation`` and the gateway, exactly as for gRPC).

Supported: ``/v1/completions`` (``prompt`` as a string, a token-id list, or a one-element
list of either) and ``/v1/chat/completions`` (``messages`` rendered by ``router.http.chat``).
Parameters: ``model``, ``max_tokens`` (chat: also ``max_completion_tokens``), ``temperature``,
``top_p``, ``seed``, ``stop``, ``stream``, ``stream_options.include_usage``, ``n`` (up to
``MAX_N`` samples; ``best_of`` too for completions, not streamed),
``presence_penalty``, ``frequency_penalty``, ``logit_bias`` (token id strings to numbers), and
vLLM's extensions ``top_k``, ``ignore_eos``, ``stop_token_ids``, ``repetition_penalty``,
``min_tokens``; ``logprobs`` (completions: the number of alternatives; chat: a bool with
``top_logprobs``); ``echo`` (completions: the prompt and, with ``logprobs``, its logprobs
first; streamed, as a first chunk of its own). Parameters Tandem cannot honour (``suffix``,
``tools``...) are refused with 400 when set to anything but their neutral value, never
silently ignored. Unknown keys are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.convert import RawRequest
from router.http.chat import ChatMessage, render_chat
from router.http.errors import HttpError
from router.http.request_models import (CHAT, CHAT_MESSAGE, COMPLETION, DETOKENIZE, MAX_N, TOKENIZE,
                                        RequestModel)

_NEUTRAL = {  # parameter: values that mean "not used"
    "suffix": (None, ""),
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []),
    "function_call": (None, "none"), "parallel_tool_calls": (None, False, True),
}
_ROLES = {"system", "developer", "user", "assistant", "tool"}
MAX_MESSAGES = 1024


@dataclass(slots=True)
class OpenAIRequest:
    raw: RawRequest
    stream: bool = False
    include_usage: bool = False
    fill_max_tokens: bool = False      # chat without max_tokens: as many as fit
    echo: bool = False                 # completions: the prompt (and its logprobs) come first
    n: int = 1                         # choices returned
    best_of: int = 0                   # completions: samples drawn, the n best returned (0: n)


def _bad(param: str, message: str) -> HttpError:
    return HttpError(400, f"{param}: {message}", param=param)


class _Body:
    """A JSON request body read through its declared model (``router.http.request_models``):
    an undeclared name is a KeyError (a parameter the published document would miss), and
    ``get`` checks the declared JSON type."""

    def __init__(self, body: Any, model: RequestModel) -> None:
        if not isinstance(body, dict):
            raise HttpError(400, "the request body must be a JSON object")
        self.body, self.model = body, model

    def raw(self, name: str) -> Any:
        """The value as sent (the caller checks its shape)."""
        self.model[name]
        return self.body.get(name)

    def get(self, name: str) -> Any:
        kind = self.model[name].kind
        value = self.body.get(name)
        if value is None or kind is None:
            return value
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, (int, float)) and not isinstance(value, bool),
              "bool": isinstance(value, bool), "str": isinstance(value, str),
              "dict": isinstance(value, dict)}[kind]
        if not ok:
            article = "an" if kind == "int" else "a"
            raise _bad(name, f"must be {article} {kind}, got {type(value).__name__}")
        if kind == "int" and not -(1 << 63) <= value < (1 << 63):
            raise _bad(name, "out of range")
        return float(value) if kind == "number" else value


def _int_list(value: Any, param: str, limit: int = 1 << 20) -> list[int]:
    if not isinstance(value, list) or len(value) > limit:
        raise _bad(param, "must be a list of token ids")
    for tok in value:
        if isinstance(tok, bool) or not isinstance(tok, int) or not -(1 << 63) <= tok < (1 << 63):
            raise _bad(param, "must be a list of integer token ids")
    return value


def _logit_bias(value: dict) -> dict[int, float]:
    """OpenAI's ``logit_bias``: token ids as JSON object keys (strings), numbers as values."""
    out = {}
    for key, bias in value.items():
        try:
            tok = int(key)
        except ValueError:
            raise _bad("logit_bias", f"keys must be token ids, got {str(key)[:32]!r}") from None
        if isinstance(bias, bool) or not isinstance(bias, (int, float)):
            raise _bad("logit_bias", f"values must be numbers, got {type(bias).__name__} for {tok}")
        if not -(1 << 63) <= tok < (1 << 63):
            raise _bad("logit_bias", "token id out of range")
        out[tok] = float(bias)
    return out


def _common(b: _Body, served_model: str) -> tuple[RawRequest, bool, bool]:
    for name, neutral in _NEUTRAL.items():
        value = b.raw(name)
        if value is not None and not any(value == n and type(value) is type(n)
                                         for n in neutral if n is not None):
            raise _bad(name, "is not supported by this server")
    model = b.get("model")
    if model is not None and model != served_model:
        raise HttpError(404, f"model {model[:128]!r} does not exist; this server serves "
                        f"{served_model!r}", param="model", code="model_not_found")
    raw = RawRequest(temperature=b.get("temperature"), top_p=b.get("top_p"), top_k=b.get("top_k"),
                     seed=b.get("seed"))
    stop = b.raw("stop")
    if isinstance(stop, str):
        raw.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        raw.stop = list(stop)
    elif stop is not None:
        raise _bad("stop", "must be a string or a list of strings")
    if b.raw("stop_token_ids") is not None:
        raw.stop_token_ids = _int_list(b.raw("stop_token_ids"), "stop_token_ids", 1024)
    raw.ignore_eos = bool(b.get("ignore_eos"))
    raw.presence_penalty = b.get("presence_penalty")
    raw.frequency_penalty = b.get("frequency_penalty")
    raw.repetition_penalty = b.get("repetition_penalty")
    raw.min_tokens = b.get("min_tokens")
    raw.logit_bias = _logit_bias(b.get("logit_bias") or {})
    stream = bool(b.get("stream"))
    options = b.get("stream_options") or {}
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise _bad("stream_options.include_usage", "must be a bool")
    if options and not stream:
        raise _bad("stream_options", "is only allowed with stream: true")
    return raw, stream, bool(include_usage)


def _samples(b: _Body, name: str, low: int = 1) -> int | None:
    value = b.get(name)
    if value is not None and not low <= value <= MAX_N:
        raise _bad(name, f"must be in [{low}, {MAX_N}], got {value}")
    return value


def parse_completion(body: Any, served_model: str) -> OpenAIRequest:
    """A ``/v1/completions`` body; HttpError(400/404) names the parameter."""
    b = _Body(body, COMPLETION)
    raw, stream, usage = _common(b, served_model)
    raw.max_tokens = b.get("max_tokens")
    raw.logprobs = b.get("logprobs")      # top alternatives per token
    echo = bool(b.get("echo"))
    if echo:
        raw.prompt_logprobs = raw.logprobs            # the prompt's, as vLLM's echo does
    n = _samples(b, "n") or 1
    best_of = _samples(b, "best_of") or 0
    if best_of and best_of < n:
        raise _bad("best_of", f"must be >= n ({n}), got {best_of}")
    if best_of > n and stream:
        raise _bad("best_of", "cannot be streamed (the best are known at the end)")
    prompt = b.raw("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]                  # a batch of one
    if isinstance(prompt, str):
        raw.prompt_text = prompt
    elif isinstance(prompt, list) and prompt and not isinstance(prompt[0], (str, list)):
        raw.prompt_token_ids = _int_list(prompt, "prompt")
    elif isinstance(prompt, list) and prompt:
        raise _bad("prompt", "batches of several prompts are not supported; send one per request")
    else:
        raise _bad("prompt", "must be a non-empty string or list of token ids")
    return OpenAIRequest(raw, stream, usage, echo=echo, n=n, best_of=best_of if best_of > n else 0)


def parse_chat(body: Any, served_model: str, template: str | None) -> OpenAIRequest:
    """A ``/v1/chat/completions`` body, its messages rendered to the prompt text."""
    b = _Body(body, CHAT)
    raw, stream, usage = _common(b, served_model)
    response_format = b.get("response_format")
    if response_format and response_format.get("type") not in (None, "text"):
        raise _bad("response_format", "only {'type': 'text'} is supported")
    top = b.get("top_logprobs")
    if b.get("logprobs"):
        raw.logprobs = 0 if top is None else top
    elif top is not None:
        raise _bad("top_logprobs", "needs logprobs: true")
    max_tokens = b.get("max_completion_tokens")
    raw.max_tokens = max_tokens if max_tokens is not None else b.get("max_tokens")
    raw.prompt_text = render_chat(_messages(b.raw("messages")), template)
    if b.raw("best_of") is not None:
        raise _bad("best_of", "is a completions parameter, not a chat one")
    return OpenAIRequest(raw, stream, usage, fill_max_tokens=raw.max_tokens is None,
                         n=_samples(b, "n") or 1)


def _messages(value: Any) -> list[ChatMessage]:
    if not isinstance(value, list) or not value:
        raise _bad("messages", "must be a non-empty list of messages")
    if len(value) > MAX_MESSAGES:
        raise _bad("messages", f"at most {MAX_MESSAGES} messages")
    out = []
    for i, msg in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _bad(where, "must be an object with 'role' and 'content'")
        m = _Body(msg, CHAT_MESSAGE)
        role = m.raw("role")
        if role not in _ROLES:
            raise _bad(f"{where}.role", f"must be one of {', '.join(sorted(_ROLES))}")
        out.append(ChatMessage(role, _content(m.raw("content"), f"{where}.content")))
    return out


def _content(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise _bad(where, "only text parts ({'type': 'text', 'text': ...}) are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(where, "must be a string or a list of text parts")


MAX_DETOKENIZE_IDS = 1 << 20


def parse_tokenize(body: Any, template: str | None) -> tuple[str, bool]:
    """vLLM's ``/tokenize`` body: (text, add BOS). ``prompt`` is a string; ``messages`` are
    rendered with the chat template, as ``/v1/chat/completions`` does."""
    b = _Body(body, TOKENIZE)
    add = b.get("add_special_tokens")
    add = True if add is None else add
    if b.raw("messages") is not None:
        if b.raw("prompt") is not None:
            raise _bad("prompt", "send prompt or messages, not both")
        return render_chat(_messages(b.raw("messages")), template), add
    prompt = b.raw("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _bad("prompt", "must be a non-empty string (or send messages)")
    return prompt, add


def parse_detokenize(body: Any, vocab_size: int) -> list[int]:
    """vLLM's ``/detokenize`` body: ``tokens``, ids in the vocabulary."""
    b = _Body(body, DETOKENIZE)
    ids = _int_list(b.raw("tokens"), "tokens", MAX_DETOKENIZE_IDS)
    for i, tok in enumerate(ids):
        if not 0 <= tok < vocab_size:
            raise _bad("tokens", f"token id {tok} at {i} is outside 0..{vocab_size - 1}")
    return ids
