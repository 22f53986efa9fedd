"""Request validation: every check that needs no worker, with the field named.

Runs in the router before a backend sees the request. Each failure is an
``InvalidRequest(field, message)``, which the service returns as INVALID_ARGUMENT with the
dotted field path in the details and in the ``tandem-field`` trailing metadata.
"""
from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from router.convert import RawRequest
from router.errors import InvalidRequest
from router.messages import GenerateRequest, ModelInfo, Resume, SamplingOptions

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_TENANT = re.compile(r"[A-Za-z0-9._\-]{0,64}")
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 64
MAX_LOGIT_BIAS = 1024          # entries
MAX_LOGPROBS = 20              # top alternatives per token
_INT64_MAX = (1 << 63) - 1
_DEFAULTS = SamplingOptions()


@dataclass(slots=True)
class Limits:
    """What a request is checked against: the model, the codecs, the router's own caps."""
    vocab_size: int
    max_model_len: int
    codecs: frozenset[str]
    max_prompt_chars: int = 1 << 20

    @classmethod
    def from_model_info(cls, info: ModelInfo, max_prompt_chars: int = 1 << 20) -> Limits:
        return cls(vocab_size=info.vocab_size, max_model_len=info.max_model_len,
                   codecs=frozenset(info.codecs), max_prompt_chars=max_prompt_chars)


class RequestValidator:
    """Turns a RawRequest into a backend-ready GenerateRequest, or raises InvalidRequest."""

    def __init__(self, limits: Limits, encode: Callable[[str], list[int]]) -> None:
        self.limits = limits
        self._encode = encode

    def validate(self, raw: RawRequest, now: float | None = None) -> GenerateRequest:
        """Check every field; tokenize a text prompt. ``now`` is a time.monotonic() value."""
        now = time.monotonic() if now is None else now
        request_id = raw.request_id or uuid.uuid4().hex
        if not _REQUEST_ID.fullmatch(request_id):
            raise InvalidRequest("request_id", "must be 1-128 characters of letters, digits, "
                                 f"'.', '_', ':', '-', got {raw.request_id[:140]!r}")
        if not _TENANT.fullmatch(raw.tenant):
            raise InvalidRequest("tenant", "must be at most 64 characters of letters, digits, "
                                 f"'.', '_', '-', got {raw.tenant[:80]!r}")
        if raw.codec and raw.codec not in self.limits.codecs:
            raise InvalidRequest("codec", f"unknown codec {raw.codec[:64]!r}; "
                                 f"known: {', '.join(sorted(self.limits.codecs))}")
        sampling = self._sampling(raw)
        prompt_ids = self._prompt(raw)
        if len(prompt_ids) + sampling.max_tokens > self.limits.max_model_len:
            raise InvalidRequest(
                "sampling.max_tokens", f"prompt ({len(prompt_ids)} tokens) + max_tokens "
                f"({sampling.max_tokens}) exceeds the model's {self.limits.max_model_len} tokens")
        return GenerateRequest(
            request_id=request_id, prompt_token_ids=prompt_ids, sampling=sampling,
            prompt_text=raw.prompt_text, tenant=raw.tenant, codec=raw.codec,
            deadline=now + raw.deadline_ms / 1000 if raw.deadline_ms else None,
            arrival_time=now, fork_group=raw.fork_group, fork_size=raw.fork_size,
            resume=self._resume(raw, sampling))

    def _resume(self, raw: RawRequest, sampling: SamplingOptions) -> Resume | None:
        if raw.resume_token_ids is None:
            return None
        if not raw.request_id:
            raise InvalidRequest("resume", "needs the request_id of the stream it continues")
        if raw.fork_size > 1:
            raise InvalidRequest("resume", "a request of several samples (n > 1) cannot be resumed")
        ids = raw.resume_token_ids
        if len(ids) > sampling.max_tokens:
            raise InvalidRequest("resume.token_ids", f"{len(ids)} tokens received, more than "
                                 f"max_tokens ({sampling.max_tokens})")
        self._check_token_ids("resume.token_ids", ids)
        if raw.resume_text_chars < 0:
            raise InvalidRequest("resume.text_chars", f"must be >= 0, got {raw.resume_text_chars}")
        return Resume(list(ids), int(raw.resume_text_chars))

    def _prompt(self, raw: RawRequest) -> list[int]:
        if raw.prompt_text is None and raw.prompt_token_ids is None:
            raise InvalidRequest("prompt", "one of prompt.text or prompt.token_ids is required")
        if raw.prompt_text is not None:
            if not raw.prompt_text:
                raise InvalidRequest("prompt.text", "must not be empty")
            if len(raw.prompt_text) > self.limits.max_prompt_chars:
                raise InvalidRequest("prompt.text", f"too long: {len(raw.prompt_text)} characters, "
                                     f"at most {self.limits.max_prompt_chars}")
            ids = self._encode(raw.prompt_text)
            where = "prompt.text"
        else:
            ids = raw.prompt_token_ids or []
            if not ids:
                raise InvalidRequest("prompt.token_ids", "must not be empty")
            self._check_token_ids("prompt.token_ids", ids)
            where = "prompt.token_ids"
        if len(ids) >= self.limits.max_model_len:
            raise InvalidRequest(where, f"too long: {len(ids)} tokens, the model takes at most "
                                 f"{self.limits.max_model_len - 1} prompt tokens")
        return ids

    def _check_token_ids(self, where: str, ids: list[int]) -> None:
        vocab = self.limits.vocab_size
        for i, tok in enumerate(ids):
            if not 0 <= tok < vocab:
                raise InvalidRequest(f"{where}[{i}]", f"token id {tok} outside 0..{vocab - 1}")

    def _sampling(self, raw: RawRequest) -> SamplingOptions:
        d = _DEFAULTS
        temperature = d.temperature if raw.temperature is None else raw.temperature
        if not math.isfinite(temperature) or temperature < 0:
            raise InvalidRequest("sampling.temperature", f"must be a finite number >= 0, got {temperature}")
        top_p = d.top_p if raw.top_p is None else raw.top_p
        if not (math.isfinite(top_p) and 0 < top_p <= 1):
            raise InvalidRequest("sampling.top_p", f"must be in (0, 1], got {top_p}")
        top_k = d.top_k if raw.top_k is None else raw.top_k
        if top_k != -1 and top_k < 1:
            raise InvalidRequest("sampling.top_k", f"must be -1 (disabled) or >= 1, got {top_k}")
        max_tokens = d.max_tokens if raw.max_tokens is None else raw.max_tokens
        if max_tokens < 1:
            raise InvalidRequest("sampling.max_tokens", f"must be >= 1, got {max_tokens}")
        if raw.seed is not None and not 0 <= raw.seed <= _INT64_MAX:
            raise InvalidRequest("sampling.seed", f"must be >= 0, got {raw.seed}")
        if len(raw.stop) > MAX_STOP_STRINGS:
            raise InvalidRequest("sampling.stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(raw.stop)}")
        for i, s in enumerate(raw.stop):
            if not s or len(s) > MAX_STOP_CHARS:
                raise InvalidRequest(f"sampling.stop[{i}]", f"must be 1-{MAX_STOP_CHARS} characters")
        if len(raw.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise InvalidRequest("sampling.stop_token_ids",
                                 f"at most {MAX_STOP_TOKEN_IDS} ids, got {len(raw.stop_token_ids)}")
        self._check_token_ids("sampling.stop_token_ids", raw.stop_token_ids)
        penalties = {}
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(raw, name)
            if value is not None and not (math.isfinite(value) and -2.0 <= value <= 2.0):
                raise InvalidRequest(f"sampling.{name}", f"must be in [-2, 2], got {value}")
            penalties[name] = float(getattr(d, name) if value is None else value)
        rp = d.repetition_penalty if raw.repetition_penalty is None else raw.repetition_penalty
        if not (math.isfinite(rp) and rp > 0):
            raise InvalidRequest("sampling.repetition_penalty", f"must be a finite number > 0, got {rp}")
        min_tokens = d.min_tokens if raw.min_tokens is None else raw.min_tokens
        if not 0 <= min_tokens <= max_tokens:
            raise InvalidRequest("sampling.min_tokens", f"must be in [0, max_tokens={max_tokens}], "
                                 f"got {min_tokens}")
        if len(raw.logit_bias) > MAX_LOGIT_BIAS:
            raise InvalidRequest("sampling.logit_bias", f"at most {MAX_LOGIT_BIAS} entries, "
                                 f"got {len(raw.logit_bias)}")
        for tok, bias in raw.logit_bias.items():
            if not 0 <= tok < self.limits.vocab_size:
                raise InvalidRequest(f"sampling.logit_bias[{tok}]",
                                     f"token id outside 0..{self.limits.vocab_size - 1}")
            if not (math.isfinite(bias) and -100.0 <= bias <= 100.0):
                raise InvalidRequest(f"sampling.logit_bias[{tok}]", f"must be in [-100, 100], got {bias}")
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(raw, name)
            if k is not None and not 0 <= k <= MAX_LOGPROBS:
                raise InvalidRequest(f"sampling.{name}", f"must be in [0, {MAX_LOGPROBS}], got {k}")
        return SamplingOptions(
            logprobs=raw.logprobs, prompt_logprobs=raw.prompt_logprobs, temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
            max_tokens=int(max_tokens), seed=raw.seed, stop=list(raw.stop),
            stop_token_ids=list(raw.stop_token_ids), ignore_eos=raw.ignore_eos,
            repetition_penalty=float(rp), min_tokens=int(min_tokens),
            logit_bias={int(t): float(b) for t, b in raw.logit_bias.items()}, **penalties)
