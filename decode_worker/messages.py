"""Messages between the router and the decode pool."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class StreamEvent:
    """New tokens of one request from one engine step (text is the matching delta).
    ``index`` and ``text_offset``: where they start in the completion (tokens, code points),
    so a router resuming a stream (``DecodeWorker.replay``) knows what the client has."""
    request_id: str
    token_ids: list[int]
    text: str
    finish_reason: str | None = None
    num_cached_tokens: int = 0
    logprobs: list | None = None           # per token, when asked (engine.logprobs)
    prompt_logprobs: list | None = None    # with a request's first token, when asked
    index: int = 0
    text_offset: int = 0


@dataclass(slots=True)
class DecodeStart:
    """Start decoding a request whose KV the prefill worker shipped."""
    request_id: str
    kv_handle: Any
    deadline: float | None = None          # time.time() epoch seconds
    resume_key: str = ""                   # what a resuming router must show (replay)


@dataclass(slots=True)
class FullRequest:
    """Compute prompt and decode in one worker (colocated mode, or recovery re-prefill)."""
    request_id: str
    prompt_token_ids: list[int]
    sampling: dict[str, Any]
    cache_salt: bytes = b""
    deadline: float | None = None
    output_len: int = 0                    # recovery: the prompt's last tokens are output already
    output_text_offset: int = 0            # ... of whose text this many chars were streamed
    fork_group: str = ""                   # samples of one request prefill once (engine.fork)
    fork_size: int = 1
    resume_key: str = ""                   # what a resuming router must show (replay)
