"""OpenAI response objects: whole completions, SSE chunks, usage.

Streamed chunks carry ``token_ids`` in each choice besides the text (an extension that
load generators use to count tokens exactly); a chat stream opens with the assistant role
and closes with an empty delta that carries the finish reason. With
``stream_options.include_usage`` a last chunk with no choices carries the usage.

Logprobs, when asked, take OpenAI's shapes: a completion's ``{"tokens", "token_logprobs",
"top_logprobs", "text_offset"}`` and a chat's ``{"content": [{"token", "logprob", "bytes",
"top_logprobs"}]}``; a token's string is the text it adds after the tokens before it (so
the completion's token strings join into its text).

With ``n`` > 1 (or ``best_of``) each sample has its own builder (``index``) and the response
or the stream holds one choice per sample; the usage counts the prompt once and every
generated token (``merge_usage``).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable

from router.messages import Finished, TokenDelta, Usage


def usage_json(usage: Usage) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens}}


def merge_usage(usages: list[Usage]) -> Usage:
    """One request's usage from its samples': the prompt once, every sample's tokens."""
    first = usages[0]
    return Usage(first.prompt_tokens, first.cached_prompt_tokens,
                 sum(u.completion_tokens for u in usages), first.ttft_ms,
                 first.prefill_worker, first.decode_worker)


def sse(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False,
                                                       separators=(",", ":"))
    return f"data: {data}\n\n".encode()


_CONTEXT = 4     # tokens of context when decoding one token's text


class ResponseBuilder:
    """Builds one request's response objects (``chat`` picks the chat shapes)."""

    def __init__(self, request_id: str, model: str, chat: bool,
                 decode: Callable[[list[int]], str] | None = None,
                 context_ids: list[int] | None = None, index: int = 0) -> None:
        self.chat, self.model, self.index = chat, model, index
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        self.created = int(time.time())
        self.decode = decode              # set when the request asked for logprobs
        self._ids = list(context_ids or [])[-_CONTEXT:]   # what the next token's text follows
        self._offset = 0                  # completion text_offset of the next token

    def _piece(self, prev: list[int], tok: int, base: str) -> str:
        """The text ``tok`` adds after ``prev`` (whose text is ``base``), so leading spaces
        come out right."""
        return self.decode(prev + [tok])[len(base):] if prev else self.decode([tok])

    def _logprobs(self, token_ids: list[int], logprobs: list | None) -> dict | None:
        """OpenAI's logprobs object; an entry may be None (an echoed prompt's first token)."""
        if self.decode is None or not logprobs:
            return None
        entries = []
        for tok, entry in zip(token_ids, logprobs):
            prev = self._ids[-_CONTEXT:]
            base = self.decode(prev) if prev else ""      # once per token, not per alternative
            lp, top = entry if entry is not None else (None, None)
            alts = None if top is None else [(self._piece(prev, t, base), v) for t, v in top]
            entries.append((self._piece(prev, tok, base), lp, alts))
            self._ids.append(tok)
        if self.chat:
            def one(s: str, v: float) -> dict:
                return {"token": s, "logprob": v, "bytes": list(s.encode())}
            return {"content": [{**one(s, lp), "top_logprobs": [one(a, v) for a, v in top]}
                                for s, lp, top in entries]}
        offsets = []
        for s, _, _ in entries:
            offsets.append(self._offset)
            self._offset += len(s)
        return {"tokens": [s for s, _, _ in entries], "token_logprobs": [lp for _, lp, _ in entries],
                "top_logprobs": [None if top is None else dict(top) for _, _, top in entries],
                "text_offset": offsets}

    def _envelope(self, choices: list, chunk: bool) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat \
            else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": choices}

    def whole(self, choices: list[dict], usage: Usage) -> dict:
        """The non-streamed response holding ``choices`` (from ``choice``)."""
        out = self._envelope(choices, chunk=False)
        out["usage"] = usage_json(usage)
        return out

    def choice(self, text: str, finished: Finished, token_ids: list[int] | None = None,
               logprobs: list | None = None, echo: tuple[list[int], str, list | None] | None = None) -> dict:
        """This sample's choice of the non-streamed response. ``echo``: (prompt ids, prompt
        text, prompt logprobs) to put first, as a completion with ``echo`` does."""
        reason = _reason(finished)
        token_ids = token_ids or []
        if echo is not None:
            prompt_ids, prompt_text, prompt_lps = echo
            text = prompt_text + text
            self._ids = []
            if logprobs:
                token_ids, logprobs = prompt_ids + token_ids, (prompt_lps or [None] * len(prompt_ids)) + logprobs
        lp = self._logprobs(token_ids, logprobs)
        if self.chat:
            return {"index": self.index, "message": {"role": "assistant", "content": text},
                    "finish_reason": reason, "logprobs": lp}
        return {"index": self.index, "text": text, "finish_reason": reason, "logprobs": lp}

    def echo_chunk(self, prompt_ids: list[int], prompt_text: str, prompt_logprobs: list | None) -> dict:
        """A completion stream's first chunk with ``echo``: the prompt's text and, when asked,
        its logprobs (no ``token_ids``: they count generated tokens)."""
        self._ids = []
        lp = self._logprobs(prompt_ids, prompt_logprobs or [None] * len(prompt_ids)) \
            if prompt_logprobs is not None else None
        return self._envelope([{"index": self.index, "text": prompt_text, "token_ids": [],
                                "finish_reason": None, "logprobs": lp}], chunk=True)

    def role_chunk(self) -> dict:
        """The first chunk of a chat stream."""
        return self._envelope([{"index": self.index, "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None, "logprobs": None}], chunk=True)

    def delta_chunk(self, delta: TokenDelta, finish_reason: str | None = None) -> dict:
        lp = self._logprobs(delta.token_ids, delta.logprobs)
        if self.chat:
            choice = {"index": self.index, "delta": {"content": delta.text} if delta.text else {},
                      "token_ids": list(delta.token_ids), "finish_reason": finish_reason,
                      "logprobs": lp}
        else:
            choice = {"index": self.index, "text": delta.text, "token_ids": list(delta.token_ids),
                      "finish_reason": finish_reason, "logprobs": lp}
        return self._envelope([choice], chunk=True)

    def finish_chunk(self, finished: Finished) -> dict:
        """The chunk that ends the choice (with the last tokens, if they came with it)."""
        delta = finished.delta or TokenDelta([], "", finished.usage.completion_tokens)
        return self.delta_chunk(delta, _reason(finished))

    def usage_chunk(self, usage: Usage) -> dict:
        out = self._envelope([], chunk=True)
        out["usage"] = usage_json(usage)
        return out


def _reason(finished: Finished) -> str:
    reason = finished.reason
    return reason.value if hasattr(reason, "value") else str(reason)
