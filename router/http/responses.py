"""OpenAI response objects: whole completions, SSE chunks, usage.

Streamed chunks carry ``token_ids`` in each choice besides the text (an extension that
load generators use to count tokens exactly); a chat stream opens with the assistant role
and closes with an empty delta that carries the finish reason. With
``stream_options.include_usage`` a last chunk with no choices carries the usage.
"""
from __future__ import annotations

import json
import time

from router.messages import Finished, TokenDelta, Usage


def usage_json(usage: Usage) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens}}


def sse(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False,
                                                       separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class ResponseBuilder:
    """Builds one request's response objects (``chat`` picks the chat shapes)."""

    def __init__(self, request_id: str, model: str, chat: bool) -> None:
        self.chat, self.model = chat, model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        self.created = int(time.time())

    def _envelope(self, choices: list, chunk: bool) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat \
            else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": choices}

    def whole(self, text: str, finished: Finished) -> dict:
        """The non-streamed response."""
        reason = _reason(finished)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        out = self._envelope([choice], chunk=False)
        out["usage"] = usage_json(finished.usage)
        return out

    def role_chunk(self) -> dict:
        """The first chunk of a chat stream."""
        return self._envelope([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None, "logprobs": None}], chunk=True)

    def delta_chunk(self, delta: TokenDelta, finish_reason: str | None = None) -> dict:
        if self.chat:
            choice = {"index": 0, "delta": {"content": delta.text} if delta.text else {},
                      "token_ids": list(delta.token_ids), "finish_reason": finish_reason,
                      "logprobs": None}
        else:
            choice = {"index": 0, "text": delta.text, "token_ids": list(delta.token_ids),
                      "finish_reason": finish_reason, "logprobs": None}
        return self._envelope([choice], chunk=True)

    def finish_chunk(self, finished: Finished) -> dict:
        """The chunk that ends the choice (with the last tokens, if they came with it)."""
        delta = finished.delta or TokenDelta([], "", finished.usage.completion_tokens)
        return self.delta_chunk(delta, _reason(finished))

    def usage_chunk(self, finished: Finished) -> dict:
        out = self._envelope([], chunk=True)
        out["usage"] = usage_json(finished.usage)
        return out


def _reason(finished: Finished) -> str:
    reason = finished.reason
    return reason.value if hasattr(reason, "value") else str(reason)
