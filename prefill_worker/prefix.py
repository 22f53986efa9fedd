"""The prefill worker's use of the global store: fetch a cached prefix if it pays, write back."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from kv_transfer.store.config import StoreConfig
from prefill_worker.messages import StoreOutcome

if TYPE_CHECKING:
    import torch

    from engine.llm_engine import LLMEngine

logger = logging.getLogger(__name__)


class PrefixFetcher:
    """Wraps the store client; with no store configured every call is a cheap no-op."""

    def __init__(self, engine: LLMEngine, store: StoreConfig | None):
        self.engine = engine
        self.client = None
        if store is not None and store.enabled:
            from kv_transfer.store.client import PrefixCacheClient
            self.client = PrefixCacheClient.open(store, engine.kv_layout)

    async def fetch(self, token_ids: list[int], salt: bytes,
                    prefill_tokens_per_s: float) -> tuple[torch.Tensor | None, StoreOutcome]:
        """The KV of the longest stored prefix worth fetching (None: recompute), and what the
        store decided."""
        if self.client is None:
            return None, StoreOutcome()
        t0 = time.perf_counter()
        kv, plan = await asyncio.to_thread(self._plan_and_fetch, token_ids, salt, prefill_tokens_per_s)
        return kv, StoreOutcome(plan.decision, plan.hit_local, plan.hit_remote, plan.usable_tokens,
                                0 if kv is None else int(kv.shape[2]), plan.est_fetch_s,
                                plan.est_recompute_s, 1000 * (time.perf_counter() - t0))

    def _plan_and_fetch(self, token_ids: list[int], salt: bytes, tps: float):
        plan = self.client.plan(token_ids, salt, tps if tps > 0 else 1.0)
        return self.client.fetch(plan), plan

    def write_back(self, token_ids: list[int], kv: torch.Tensor, salt: bytes) -> None:
        if self.client is not None:
            self.client.write_back(token_ids, kv, salt)

    def stats(self) -> dict:
        return {} if self.client is None else dataclasses.asdict(self.client.stats())

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
