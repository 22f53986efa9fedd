"""What the engine hands back per request."""
from __future__ import annotations

from dataclasses import dataclass, field

# One generated token's (logprob, [(id, logprob) of the top alternatives]); engine.logprobs.
TokenLogprob = tuple[float, list[tuple[int, float]]]


@dataclass(slots=True)
class RequestOutput:
    """State of one request after a step.

    ``new_token_ids``/``new_text`` are this step's delta; ``token_ids``/``text`` the whole
    output so far. When the request asked for ``logprobs``, ``new_logprobs``/``logprobs`` hold
    one ``(logprob, top alternatives)`` entry per token of the delta / of the output this
    engine generated (``engine.logprobs``); otherwise None. ``finish_reason`` is None while running, else "stop", "length" or "abort".
    """
    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    new_token_ids: list[int] = field(default_factory=list)
    new_text: str = ""
    finish_reason: str | None = None
    num_cached_tokens: int = 0
    ttft_s: float | None = None
    new_logprobs: list[TokenLogprob] | None = None
    logprobs: list[TokenLogprob] | None = None
    # Asked with prompt_logprobs: one entry per prompt token (None for the first), on the
    # output that carries the first generated token (and on later whole outputs).
    prompt_logprobs: list[TokenLogprob | None] | None = None
    # Chars of output text streamed before ``new_text`` (held-back stop-string text excluded):
    # with ``len(token_ids) - len(new_token_ids)``, where this delta sits in the completion.
    text_offset: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
