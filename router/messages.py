"""Messages between the router front end and a backend: plain dataclasses, no protobuf.

``router.convert`` maps them to and from the ``tandem.v1`` protos; backends (the local
engine, the Ray pools) only ever see these.
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field


@dataclass(slots=True)
class SamplingOptions:
    """Sampling parameters with the engine's names and defaults (``engine.SamplingParams``)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None
    prompt_logprobs: int | None = None

    def to_dict(self) -> dict:
        """Keyword arguments for ``engine.SamplingParams.from_dict``."""
        return asdict(self)


@dataclass(slots=True)
class GenerateRequest:
    """One validated generation request as a backend receives it.

    ``prompt_token_ids`` is always set (the router tokenizes text prompts); ``prompt_text``
    is kept when the client sent text. ``deadline`` and ``arrival_time`` are
    ``time.monotonic()`` values in the router process.
    """
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    prompt_text: str | None = None
    tenant: str = ""
    codec: str = ""                   # "" = the cluster's default codec
    deadline: float | None = None
    arrival_time: float = 0.0
    fork_group: str = ""              # samples of one client request (n > 1): prefill once
    fork_size: int = 1                # ... how many samples the group has
    resume: Resume | None = None      # continue a broken stream after what the client has


@dataclass(slots=True)
class Resume:
    """What the client received of a stream that broke: its tokens and the length of their
    text (code points). The backend continues after them, repeating and skipping nothing."""
    token_ids: list[int]
    text_chars: int = 0


class FinishReason(str, enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(slots=True)
class TokenDelta:
    """New tokens since the previous delta; ``index`` is the position of the first one."""
    token_ids: list[int]
    text: str
    index: int
    logprobs: list | None = None   # per token: (logprob, [(id, logprob) top]) when asked
    prompt_logprobs: list | None = None   # with the first delta: one per prompt token (None first)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    prefill_worker: str = ""
    decode_worker: str = ""


@dataclass(slots=True)
class Finished:
    """The last event of a generation. ``delta``: tokens that arrived with the finish (sent
    in the same stream message, so a one-token request costs one message)."""
    reason: FinishReason
    usage: Usage
    delta: TokenDelta | None = None


GenerateEvent = TokenDelta | Finished


@dataclass(slots=True)
class ModelInfo:
    model: str
    vocab_size: int
    max_model_len: int
    block_size: int
    dtype: str
    num_layers: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    eos_token_id: int | None = None
    codecs: list[str] = field(default_factory=lambda: ["raw"])
    default_codec: str = "raw"
    mode: str = "colocated"


class WorkerHealth(str, enum.Enum):
    STARTING = "starting"
    HEALTHY = "healthy"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"


@dataclass(slots=True)
class WorkerInfo:
    worker_id: str
    health: WorkerHealth
    node: str = ""
    device: str = "cpu"
    running_requests: int = 0
    waiting_requests: int = 0
    free_kv_blocks: int = 0
    total_kv_blocks: int = 0
    load: float = 0.0
    restarts: int = 0


@dataclass(slots=True)
class PoolInfo:
    name: str                          # "prefill" | "decode" | "colocated"
    workers: list[WorkerInfo] = field(default_factory=list)


@dataclass(slots=True)
class ClusterInfo:
    mode: str
    pools: list[PoolInfo] = field(default_factory=list)
    healthy: bool = False
