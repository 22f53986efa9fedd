"""The real prefill worker in this process (no Ray), for tests and benchmarks: its store
flow, and a decode engine that continues what it hands off through the in-process transport.
"""
from __future__ import annotations

import asyncio

from engine import EngineConfig, LLMEngine, SamplingParams
from engine.kv_export import SequenceKV
from engine.outputs import RequestOutput
from kv_transfer.config import KVTransferConfig
from kv_transfer.handoff import KVReceiver
from kv_transfer.store.config import StoreConfig
from prefill_worker.messages import PrefillRequest, PrefillResult
from prefill_worker.worker import PrefillWorker

ENGINE = EngineConfig(model="stories260K", enable_prefix_caching=False, seed=0, max_num_seqs=4,
                      device="cpu")


class InProcessPrefill:
    """``PrefillWorker`` driven directly; ``run`` prefills, receives the KV and decodes it."""

    def __init__(self, store: StoreConfig | None, engine: EngineConfig = ENGINE):
        local = KVTransferConfig(transport="local")
        self.worker = PrefillWorker("prefill-test", engine, local, store)
        self.receiver = KVReceiver(self.worker.engine.kv_layout, local)
        self.decoder = LLMEngine(engine, loaded=self.worker.engine.loaded)

    @property
    def client(self):
        return self.worker.prefix.client

    def prefill(self, rid: str, prompt: list[int], params: SamplingParams, salt: str = "tenant-a",
                assume_tokens_per_s: float | None = None) -> tuple[PrefillResult, SequenceKV | None]:
        """One request through the worker; ``assume_tokens_per_s`` pins the prefill speed the
        store's fetch-or-recompute controller sees (else the worker's own measurement)."""
        if assume_tokens_per_s is not None:
            self.worker.prefill_tokens, self.worker.prefill_s = assume_tokens_per_s, 1.0
        req = PrefillRequest(rid, list(prompt), params.to_dict(), salt.encode())
        result = asyncio.run(self.worker.prefill(req))
        if result.kv_handle is None:
            return result, None
        return result, self.receiver.receive(result.kv_handle)[0]

    def run(self, rid: str, prompt: list[int], params: SamplingParams,
            salt: str = "tenant-a") -> tuple[PrefillResult, list[int]]:
        """Prefill here, decode the handed-off KV to the end: (prefill result, output ids)."""
        result, seq_kv = self.prefill(rid, prompt, params, salt)
        if seq_kv is None:
            return result, [result.first_token_id]
        return result, decode_to_end(self.decoder, seq_kv).token_ids

    def close(self) -> None:
        self.worker.shutdown()

    def __enter__(self) -> InProcessPrefill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode_to_end(engine: LLMEngine, seq_kv: SequenceKV) -> RequestOutput:
    """Continue an exported sequence in ``engine`` until it finishes."""
    engine.import_kv(seq_kv)
    while True:
        for out in engine.step():
            if out.request_id == seq_kv.request_id and out.finished:
                return out
