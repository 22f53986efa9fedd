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
``top_logprobs``); ``echo`` (completions, not streamed: the prompt and, with ``logprobs``,
its logprobs first). Parameters Tandem cannot honour (``suffix``,
``tools``...) are refused with 400 when set to anything but their neutral value, never
silently ignored. Unknown keys are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.convert import RawRequest
from router.http.chat import ChatMessage, render_chat
from router.http.errors import HttpError

_NEUTRAL = {  # parameter: values that mean "not used"
    "suffix": (None, ""),
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []),
    "function_call": (None, "none"), "parallel_tool_calls": (None, False, True),
}
_ROLES = {"system", "developer", "user", "assistant", "tool"}
MAX_MESSAGES = 1024
MAX_N = 16                 # samples of one request (n, best_of)


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


def _get(body: dict, name: str, kind: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
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


def _common(body: Any, served_model: str) -> tuple[RawRequest, bool, bool]:
    if not isinstance(body, dict):
        raise HttpError(400, "the request body must be a JSON object")
    for name, neutral in _NEUTRAL.items():
        value = body.get(name)
        if value is not None and not any(value == n and type(value) is type(n)
                                         for n in neutral if n is not None):
            raise _bad(name, "is not supported by this server")
    model = _get(body, "model", "str")
    if model is not None and model != served_model:
        raise HttpError(404, f"model {model[:128]!r} does not exist; this server serves "
                        f"{served_model!r}", param="model", code="model_not_found")
    raw = RawRequest(temperature=_get(body, "temperature", "number"),
                     top_p=_get(body, "top_p", "number"), top_k=_get(body, "top_k", "int"),
                     seed=_get(body, "seed", "int"))
    stop = body.get("stop")
    if isinstance(stop, str):
        raw.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        raw.stop = list(stop)
    elif stop is not None:
        raise _bad("stop", "must be a string or a list of strings")
    if body.get("stop_token_ids") is not None:
        raw.stop_token_ids = _int_list(body["stop_token_ids"], "stop_token_ids", 1024)
    raw.ignore_eos = bool(_get(body, "ignore_eos", "bool"))
    raw.presence_penalty = _get(body, "presence_penalty", "number")
    raw.frequency_penalty = _get(body, "frequency_penalty", "number")
    raw.repetition_penalty = _get(body, "repetition_penalty", "number")
    raw.min_tokens = _get(body, "min_tokens", "int")
    raw.logit_bias = _logit_bias(_get(body, "logit_bias", "dict") or {})
    stream = bool(_get(body, "stream", "bool"))
    options = _get(body, "stream_options", "dict") or {}
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise _bad("stream_options.include_usage", "must be a bool")
    if options and not stream:
        raise _bad("stream_options", "is only allowed with stream: true")
    return raw, stream, bool(include_usage)


def _samples(body: dict, name: str, low: int = 1) -> int | None:
    value = _get(body, name, "int")
    if value is not None and not low <= value <= MAX_N:
        raise _bad(name, f"must be in [{low}, {MAX_N}], got {value}")
    return value


def parse_completion(body: Any, served_model: str) -> OpenAIRequest:
    """A ``/v1/completions`` body; HttpError(400/404) names the parameter."""
    raw, stream, usage = _common(body, served_model)
    raw.max_tokens = _get(body, "max_tokens", "int")
    raw.logprobs = _get(body, "logprobs", "int")      # top alternatives per token
    echo = bool(_get(body, "echo", "bool"))
    if echo and stream:
        raise _bad("echo", "is supported without stream only")
    if echo:
        raw.prompt_logprobs = raw.logprobs            # the prompt's, as vLLM's echo does
    n = _samples(body, "n") or 1
    best_of = _samples(body, "best_of") or 0
    if best_of and best_of < n:
        raise _bad("best_of", f"must be >= n ({n}), got {best_of}")
    if best_of > n and stream:
        raise _bad("best_of", "cannot be streamed (the best are known at the end)")
    prompt = body.get("prompt")
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
    raw, stream, usage = _common(body, served_model)
    response_format = _get(body, "response_format", "dict")
    if response_format and response_format.get("type") not in (None, "text"):
        raise _bad("response_format", "only {'type': 'text'} is supported")
    top = _get(body, "top_logprobs", "int")
    if _get(body, "logprobs", "bool"):
        raw.logprobs = 0 if top is None else top
    elif top is not None:
        raise _bad("top_logprobs", "needs logprobs: true")
    max_tokens = _get(body, "max_completion_tokens", "int")
    raw.max_tokens = max_tokens if max_tokens is not None else _get(body, "max_tokens", "int")
    raw.prompt_text = render_chat(_messages(body.get("messages")), template)
    if body.get("best_of") is not None:
        raise _bad("best_of", "is a completions parameter, not a chat one")
    return OpenAIRequest(raw, stream, usage, fill_max_tokens=raw.max_tokens is None,
                         n=_samples(body, "n") or 1)


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
        role = msg.get("role")
        if role not in _ROLES:
            raise _bad(f"{where}.role", f"must be one of {', '.join(sorted(_ROLES))}")
        out.append(ChatMessage(role, _content(msg.get("content"), f"{where}.content")))
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
    if not isinstance(body, dict):
        raise HttpError(400, "the request body must be a JSON object")
    add = _get(body, "add_special_tokens", "bool")
    add = True if add is None else add
    if body.get("messages") is not None:
        if body.get("prompt") is not None:
            raise _bad("prompt", "send prompt or messages, not both")
        return render_chat(_messages(body["messages"]), template), add
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _bad("prompt", "must be a non-empty string (or send messages)")
    return prompt, add


def parse_detokenize(body: Any, vocab_size: int) -> list[int]:
    """vLLM's ``/detokenize`` body: ``tokens``, ids in the vocabulary."""
    if not isinstance(body, dict):
        raise HttpError(400, "the request body must be a JSON object")
    ids = _int_list(body.get("tokens"), "tokens", MAX_DETOKENIZE_IDS)
    for i, tok in enumerate(ids):
        if not 0 <= tok < vocab_size:
            raise _bad("tokens", f"token id {tok} at {i} is outside 0..{vocab_size - 1}")
    return ids
