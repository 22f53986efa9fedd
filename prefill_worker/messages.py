"""Messages between the router and the prefill pool (dataclasses; Ray serialises them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class PrefillRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling: dict[str, Any]              # engine.SamplingParams.to_dict()
    cache_salt: bytes = b""
    codec: str = ""                       # "" = the worker's default codec
    decode_worker: str = ""               # who will receive the KV
    deadline: float | None = None         # time.time() epoch seconds
    output_len: int = 0                   # recovery: the prompt's last tokens are output already
    output_text_offset: int = 0           # ... of whose text this many chars were streamed
    fork_group: str = ""                  # samples of one request prefill once (engine.fork)
    fork_size: int = 1
    transfer_id: str = ""                 # the KV transfer the decode worker already waits for


@dataclass(slots=True)
class StoreOutcome:
    """What the global store contributed to one prefill (``kv_transfer.store.FetchPlan``,
    without the prompt): ``decision`` is "off" with no store, else the plan's decision."""
    decision: str = "off"
    hit_local: int = 0                    # stored prefix tokens found in the DRAM tier
    hit_remote: int = 0                   # ... in Redis
    usable_tokens: int = 0                # longest prefix a hit may cover
    fetched_tokens: int = 0               # tokens of KV actually fetched and used
    est_fetch_s: float = 0.0
    est_recompute_s: float = 0.0
    store_ms: float = 0.0                 # plan + fetch


@dataclass(slots=True)
class PrefillResult:
    request_id: str
    worker_id: str
    first_token_id: int
    first_text: str                       # the first token's streamable text (stop strings may hold it back)
    finish_reason: str | None             # set when the request ended at its first token
    num_cached_tokens: int
    kv_handle: Any = None                 # a transport descriptor; None when finished
    kv_bytes: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    store: StoreOutcome = field(default_factory=StoreOutcome)
    first_logprobs: list | None = None    # the first token's (engine.logprobs), when asked
    prompt_logprobs: list | None = None   # one per prompt token (None first), when asked
