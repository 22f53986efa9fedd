"""A synchronous prefill around the store, on an engine driven by the caller.

The reference sequence of calls (the Ray prefill worker does the same asynchronously):
plan -> fetch -> ``add_request(prefill_only, cached_prefix_kv)`` -> step to the first
token -> ``export_kv`` -> ``write_back``. Used by the store's tests and benchmark, and by
any single-process user that owns its engine loop.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from engine.kv_export import SequenceKV
from engine.llm_engine import LLMEngine
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams
from kv_transfer.store.client import PrefixCacheClient
from kv_transfer.store.keys import tenant_bytes
from kv_transfer.store.stats import FetchPlan


@dataclass(slots=True)
class PrefillOutcome:
    """One prefill: what the store decided, the first token, and the exported KV."""
    plan: FetchPlan
    first: RequestOutput
    seq_kv: SequenceKV | None      # None when the request finished with its first token
    ttft_s: float                  # plan + fetch + prefill + first token
    fetched_tokens: int
    wrote_back: bool


def prefill_with_store(engine: LLMEngine, client: PrefixCacheClient, request_id: str,
                       prompt_ids: Sequence[int], params: SamplingParams,
                       salt: bytes | str | None, prefill_tokens_per_s: float,
                       write_back: bool = True) -> PrefillOutcome:
    """Prefill one prompt, reusing whatever stored prefix the controller says pays."""
    prompt = list(prompt_ids)
    started = time.perf_counter()
    plan = client.plan(prompt, salt, prefill_tokens_per_s)
    prefix_kv = client.fetch(plan)
    engine.add_request(request_id, prompt, params, prefill_only=True,
                       cached_prefix_kv=prefix_kv, cache_salt=tenant_bytes(salt))
    first = step_until_first(engine, request_id)
    ttft = time.perf_counter() - started
    fetched = 0 if prefix_kv is None else int(prefix_kv.shape[2])
    if first.finished:
        return PrefillOutcome(plan, first, None, ttft, fetched, False)
    seq_kv = engine.export_kv(request_id)
    engine.release(request_id)
    wrote = client.write_back(prompt, seq_kv.kv, salt) if write_back else False
    return PrefillOutcome(plan, first, seq_kv, ttft, fetched, wrote)


def step_until_first(engine: LLMEngine, request_id: str) -> RequestOutput:
    """Step the engine until ``request_id`` produces an output."""
    while True:
        for out in engine.step():
            if out.request_id == request_id:
                return out


def decode_to_end(engine: LLMEngine, seq_kv: SequenceKV) -> RequestOutput:
    """Continue an exported sequence in ``engine`` until it finishes."""
    engine.import_kv(seq_kv)
    while True:
        for out in engine.step():
            if out.request_id == seq_kv.request_id and out.finished:
                return out
