"""Per-request sampling parameters (vLLM-compatible names and semantics).

Penalties and constraints act on the logits before sampling (``engine.logits_processing``),
in vLLM's order: ``logit_bias``, ``min_tokens``, then ``repetition_penalty``,
``frequency_penalty`` and ``presence_penalty``; greedy decoding sees them too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

MAX_LOGIT_BIAS = 100.0       # OpenAI's range for a logit_bias value
MAX_LOGPROBS = 20            # top alternatives per token (OpenAI's and vLLM's default cap)


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1            # -1: disabled
    max_tokens: int = 16
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    presence_penalty: float = 0.0     # [-2, 2]: subtracted once from every token already output
    frequency_penalty: float = 0.0    # [-2, 2]: subtracted per occurrence in the output
    repetition_penalty: float = 1.0   # > 0: tokens of the prompt or output, logit / p if > 0 else * p
    min_tokens: int = 0               # no EOS, stop token or stop string before this many tokens
    logit_bias: dict[int, float] = field(default_factory=dict)   # token id -> added to its logit
    logprobs: int | None = None       # None: off; k: each token's logprob and the top k (raw logits)
    prompt_logprobs: int | None = None   # the same for every prompt token (vLLM's; no prefix cache)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or (self.top_k != -1 and self.top_k < 1):
            raise ValueError(f"top_k must be -1 (disabled) or >= 1, got {self.top_k!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must hold non-empty strings")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise ValueError("stop_token_ids must hold non-negative ints")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not -2.0 <= value <= 2.0:
                raise ValueError(f"{name} must be in [-2, 2], got {value!r}")
        rp = self.repetition_penalty
        if not isinstance(rp, (int, float)) or not (math.isfinite(rp) and rp > 0):
            raise ValueError(f"repetition_penalty must be a finite number > 0, got {rp!r}")
        if not isinstance(self.min_tokens, int) or not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens!r}")
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(self, name)
            if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_LOGPROBS):
                raise ValueError(f"{name} must be None or in [0, {MAX_LOGPROBS}], got {k!r}")
        if not isinstance(self.logit_bias, dict):
            raise ValueError("logit_bias must map token ids to numbers")
        for tok, bias in self.logit_bias.items():
            if isinstance(tok, bool) or not isinstance(tok, int) or tok < 0:
                raise ValueError(f"logit_bias keys must be token ids >= 0, got {tok!r}")
            if isinstance(bias, bool) or not isinstance(bias, (int, float)) or \
                    not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
                raise ValueError(f"logit_bias[{tok}] must be in [-100, 100], got {bias!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def adjusts_logits(self) -> bool:
        """Whether any penalty or constraint changes the logits before sampling."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0
                    or self.min_tokens or self.logit_bias)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingParams":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown sampling fields: {sorted(unknown)}")
        bias = d.get("logit_bias")
        if isinstance(bias, dict) and any(isinstance(k, str) for k in bias):
            # JSON (the KV wire format) keeps object keys as strings: "42" is token 42.
            d = {**d, "logit_bias": {_token_key(k): v for k, v in bias.items()}}
        return cls(**d)


def _token_key(key: object) -> object:
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return int(key)
    return key      # anything else is left for validate() to refuse
