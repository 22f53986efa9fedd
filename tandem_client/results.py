"""Results returned by the SDK: plain dataclasses, no protobuf in the public API."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenDelta:
    """Tokens produced since the previous delta. ``index``: position of token_ids[0]
    in the completion."""
    token_ids: list[int]
    text: str
    index: int
    logprobs: list[TokenLogprob] | None = None    # one per token when the request asked
    prompt_logprobs: list[TokenLogprob | None] | None = None   # first delta: per prompt token, None first


@dataclass(slots=True)
class TokenLogprob:
    """A generated token's log-probability, and the ``top`` most likely tokens as
    (token id, logprob), most likely first (raw model logits, before sampling settings)."""
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0     # prompt tokens whose KV was reused
    completion_tokens: int = 0
    ttft_ms: float = 0.0              # router receipt to first token
    prefill_worker: str = ""
    decode_worker: str = ""


@dataclass(slots=True)
class GenerationResult:
    """A finished generation. ``finish_reason``: "stop", "length" or "abort"."""
    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str
    usage: Usage = field(default_factory=Usage)
    logprobs: list[TokenLogprob] | None = None    # one per token when the request asked
    prompt_logprobs: list[TokenLogprob | None] | None = None   # per prompt token (None first)


@dataclass(slots=True)
class ModelInfo:
    model: str
    vocab_size: int
    max_model_len: int
    block_size: int
    dtype: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    eos_token_id: int
    codecs: list[str]
    default_codec: str
    mode: str


@dataclass(slots=True)
class WorkerInfo:
    worker_id: str
    node: str
    health: str                       # "starting" | "healthy" | "draining" | "unhealthy"
    running_requests: int
    waiting_requests: int
    free_kv_blocks: int
    total_kv_blocks: int
    load: float
    restarts: int
    device: str


@dataclass(slots=True)
class PoolInfo:
    name: str
    workers: list[WorkerInfo]


@dataclass(slots=True)
class ClusterInfo:
    mode: str
    pools: list[PoolInfo]
    healthy: bool
