"""A request's state inside one engine."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from engine.sampling_params import SamplingParams
from engine.tokenizer import IncrementalDetokenizer


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PARKED = "parked"          # prefill-only request done: KV held for export
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    request_id: str
    token_ids: list[int]
    prompt_len: int
    sampling: SamplingParams
    detok: IncrementalDetokenizer
    generator: torch.Generator | None = None
    cache_salt: bytes = b""
    prefill_only: bool = False
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[bytes] = field(default_factory=list)   # of the blocks registered in the pool
    hash_chain: list[bytes] = field(default_factory=list)     # chained hashes of full blocks, kept
    num_computed: int = 0               # tokens whose KV is in the cache
    num_cached_tokens: int = 0          # of the prompt, served by the prefix cache or a given prefix
    pending_prefix_kv: torch.Tensor | None = None   # [L, 2, n, H, D] to write before the first step
    pending_prefix_start: int = 0       # first position of pending_prefix_kv not already cached
    finish_reason: str | None = None
    stop_text_cut: int | None = None
    emitted_text_len: int = 0           # output chars already streamed (never taken back)
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    prompt_copy: list[int] | None = None   # the prompt as outputs hand it out, copied once
    logprobs: list = field(default_factory=list)   # per generated token, when asked (engine.logprobs)
    prompt_logprobs: list = field(default_factory=list)   # per prompt token (None for the first)
    fork_group: str = ""                # samples of one request share its prefill (engine.fork)
    fork_size: int = 1                  # ... how many samples the group has
    leader: Sequence | None = None      # while a follower waits for its leader's prefill
    followers: list[Sequence] = field(default_factory=list)

    @property
    def prompt_token_ids(self) -> list[int]:
        """The prompt ids (one list per sequence, shared by every output: do not mutate)."""
        if self.prompt_copy is None:
            self.prompt_copy = self.token_ids[:self.prompt_len]
        return self.prompt_copy

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.prompt_len

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.prompt_len:]

    @property
    def output_text(self) -> str:
        text = self.detok.text
        return text if self.stop_text_cut is None else text[:self.stop_text_cut]
