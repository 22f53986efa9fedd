"""The router's prefix index of a worker, built from load-report deltas, equals the worker's
own index after requests add blocks, evictions remove them and the worker restarts."""
from __future__ import annotations

import asyncio
import random

from router.backends.worker_registry import WorkerRegistry
from decode_worker.messages import FullRequest
from decode_worker.worker import DecodeWorker
from engine import EngineConfig, SamplingParams
from kv_transfer.config import KVTransferConfig

NAME = "tandem-colocated-0"


def _worker() -> DecodeWorker:
    # 24 blocks of 16 tokens: a few 64-token prompts fill the cache, later ones evict.
    cfg = EngineConfig(model="stories260K", dtype="float32", num_kv_blocks=24, max_model_len=128, num_threads=1)
    return DecodeWorker(NAME, cfg, KVTransferConfig(), role="colocated")


async def _serve(worker: DecodeWorker, rng: random.Random, n: int) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=3).to_dict()
    ids = {f"r{rng.random()}" for _ in range(n)}
    cursor = worker.outbox.cursor
    for rid in ids:
        await worker.submit(FullRequest(rid, [1] + [rng.randrange(3, 500) for _ in range(63)], params))
    while ids:
        cursor, events = await worker.outbox.events_after(cursor, 10.0)
        ids -= {e.request_id for e in events if e.finish_reason is not None}


def _index(worker: DecodeWorker) -> set[bytes]:
    return set(worker.driver.submit(lambda e: set(e.pool.by_hash)).result(10))


def test_a_view_built_from_deltas_equals_the_workers_index_through_adds_evictions_and_restart():
    async def main():
        rng = random.Random(7)
        registry = WorkerRegistry({"colocated": {NAME: None}})
        view = registry.views["colocated"][NAME]

        async def report(worker):
            res = await worker.load(*registry.since(NAME))
            registry.apply_hashes(view, res)
            assert view.cached_hashes == _index(worker)
            return res

        worker = _worker()
        try:
            first = await report(worker)
            assert first.hashes_base == 0 and first.hashes_added == []

            await _serve(worker, rng, 2)                       # adds
            res = await report(worker)
            assert res.hashes_base == first.hashes_version == 0   # the index was empty: version 0
            assert len(res.hashes_added) == 8 and res.hashes_removed == []

            unchanged = await report(worker)                   # nothing changed: an empty delta
            assert unchanged.hashes_base == unchanged.hashes_version == res.hashes_version
            assert unchanged.hashes_added == unchanged.hashes_removed == []

            await _serve(worker, rng, 5)                       # 28 blocks into 24: evictions
            res = await report(worker)
            assert res.hashes_base > 0 and res.hashes_removed and res.hashes_added

            registry.expect_cached(view, [b"routed-here"])     # the router's own guess...
            assert b"routed-here" in view.cached_hashes
            await report(worker)                               # ...gives way to the worker's report
            assert b"routed-here" not in view.cached_hashes

            registry.mark_failed(NAME)                         # a failed worker resyncs in full
            assert registry.since(NAME) == ("", 0)
            res = await report(worker)
            assert res.hashes_base == 0 and set(res.hashes_added) == _index(worker)
        finally:
            worker.shutdown()

        restarted = _worker()                                  # new incarnation, asked with the old one
        try:
            assert registry.since(NAME)[0] == worker.incarnation
            await _serve(restarted, rng, 1)
            res = await report(restarted)
            assert res.hashes_base == 0 and len(res.hashes_added) == 4
            assert registry.since(NAME)[0] == restarted.incarnation
        finally:
            restarted.shutdown()

    asyncio.run(main())


class _HeldLoad:
    """A handle whose ``load`` answers only once ``gate`` opens (fault injection: a report
    still in flight when a call finds the worker dead)."""

    def __init__(self, worker: DecodeWorker, gate: asyncio.Event):
        self.load = self
        self._worker, self._gate = worker, gate

    def remote(self, *args):
        async def answer():
            await self._gate.wait()
            return await self._worker.load(*args)
        return answer()


def test_a_report_answered_before_the_worker_was_found_dead_does_not_revive_it():
    async def main():
        worker = _worker()
        gate = asyncio.Event()
        registry = WorkerRegistry({"colocated": {NAME: _HeldLoad(worker, gate)}})
        view = registry.views["colocated"][NAME]
        try:
            refresh = asyncio.create_task(registry.refresh_once())   # a report is asked for...
            for _ in range(3):
                await asyncio.sleep(0)
            registry.mark_failed(NAME)                               # ...a call finds it dead...
            gate.set()                                               # ...then the report lands
            await refresh
            assert not view.healthy
            await registry.refresh_once()        # a report asked after the failure counts
            assert view.healthy
        finally:
            worker.shutdown()
    asyncio.run(main())
