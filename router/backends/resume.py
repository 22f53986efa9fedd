"""Resuming a stream whose router died: find the worker that holds the request, and relay
only what the client has not received.

The decode worker keeps decoding a request whose router is gone (until its deadline) and
its outbox retains the events (``decode_worker.outbox.RETAIN_S``). A client whose stream
broke sends the same request again, to any router, with what it received
(``GenerateRequest.resume``). That router asks the stream pool who holds the request
(``DecodeWorker.replay``, guarded by ``resume_key``: the same tenant, prompt and sampling),
subscribes to its events and relays each one cut to what the client lacks (``unseen``);
every event says where it starts in the completion. Where nobody holds it, or the retained
events leave a hole, the request is recovered like a lost decode worker: its prompt plus the
tokens the client has are computed again on a healthy pair.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from array import array

from decode_worker.messages import StreamEvent
from router.messages import FinishReason, GenerateRequest

logger = logging.getLogger(__name__)

FIND_TIMEOUT_S = 2.0


class StreamGap(Exception):
    """An event starts after what the client has: tokens or text in between are missing."""


def resume_key(request: GenerateRequest, sampling: dict | None = None) -> str:
    """A digest of what makes a request the same one: tenant, prompt and sampling
    (``sampling``: ``request.sampling.to_dict()`` when the caller has it already)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(request.tenant.encode() + b"\0")
    h.update(array("q", request.prompt_token_ids).tobytes())
    h.update(json.dumps(request.sampling.to_dict() if sampling is None else sampling,
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def complete_reason(request: GenerateRequest, eos_token_ids) -> FinishReason | None:
    """For a resumed stream whose client has ``max_tokens`` tokens (all but the finish):
    how it ended, by a stop token that was its last or by length. None while tokens are due."""
    have = request.resume.token_ids if request.resume is not None else []
    if len(have) < request.sampling.max_tokens:
        return None
    stops = set(request.sampling.stop_token_ids)
    if not request.sampling.ignore_eos:
        stops.update(eos_token_ids)
    return FinishReason.STOP if have[-1] in stops else FinishReason.LENGTH


def unseen(event: StreamEvent, tokens: int, chars: int) -> StreamEvent | None:
    """``event`` cut to what follows ``tokens`` tokens and ``chars`` characters of the
    completion; None when nothing is new (and it ends nothing). Raises ``StreamGap`` when the
    event starts beyond them."""
    if event.index > tokens or (event.text and event.text_offset > chars):
        raise StreamGap(f"event at token {event.index} / char {event.text_offset}, the client "
                        f"has {tokens} / {chars}")
    drop = tokens - event.index
    cut = max(0, chars - event.text_offset)
    if drop <= 0 and cut <= 0:
        return event
    ids = event.token_ids[drop:] if drop > 0 else event.token_ids
    text = event.text[cut:]
    if not ids and not text and event.finish_reason is None:
        return None
    logprobs = event.logprobs[drop:] if event.logprobs is not None and drop > 0 else event.logprobs
    return StreamEvent(event.request_id, ids, text, event.finish_reason, event.num_cached_tokens,
                       logprobs, event.prompt_logprobs if drop <= 0 else None,
                       event.index + max(0, drop), event.text_offset + cut)


async def find_holder(views: list, request_id: str, key: str, timeout_s: float = FIND_TIMEOUT_S):
    """The view (of ``views``) whose worker holds ``request_id`` under ``key``, or None.
    Asks them all at once; one that does not answer in ``timeout_s`` counts as not holding
    it. Where several hold it (a recovery moved it and the first was not told), the one
    that went furthest wins."""
    async def ask(view):
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.wrap_future(view.handle.replay.remote(request_id, key).future())
        except Exception as exc:       # dead, restarting or slow: not a holder we can use
            logger.debug("replay of %s on %s failed: %s", request_id, view.name, type(exc).__name__)
            return None

    answers = await asyncio.gather(*(ask(v) for v in views))
    best, best_end = None, -1
    for view, got in zip(views, answers):
        if got is None:
            continue
        _, events = got
        end = max((e.index + len(e.token_ids) for e in events), default=0)
        if any(e.finish_reason is not None for e in events):
            end += 1 << 30
        if end > best_end:
            best, best_end = view, end
    return best
