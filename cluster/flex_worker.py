"""A pool worker that can switch between the prefill and the decode role without reloading
its weights (``rebalance.enabled``; ``cluster.rebalance`` decides when).

One engine, one engine thread, and both workers' front ends over it: ``PrefillWorker``'s
(prefix lookup, prefill, KV export, the KV source a decode worker pulls from) and
``DecodeWorker``'s (KV import, the continuous batch, the outbox the router polls). The role
is what the worker *announces* in its load reports: every router picks prefill workers among
those that report "prefill" and decode workers among those that report "decode", so a switch
reaches every router (several, with HA) through the load poll, and nothing else is needed to
agree on it.

A switch loses nothing and hands nothing over: the worker keeps serving whatever a router
sent it in either role, so the requests of its old role finish here (their streams still
polled, their KV transfers still pulled) while the new role's arrive, including any a router
sent before its next load poll told it of the switch. Nothing is drained or re-prefilled;
the engine's one block pool holds both while they overlap.

``set_role`` refuses a switch within ``min_dwell_s`` of the last one (``RoleSwitchRefused``),
here in the worker, so that no controller, nor two routers' controllers, can make a worker
oscillate.
"""
from __future__ import annotations

import logging
import time

from decode_worker.messages import DecodeStart, FullRequest, StreamEvent
from decode_worker.worker import DecodeWorker
from engine.config import EngineConfig
from kv_transfer.config import KVTransferConfig
from kv_transfer.store.config import StoreConfig
from prefill_worker.messages import PrefillRequest, PrefillResult
from prefill_worker.worker import PrefillWorker
from tandem_common.worker_load import WorkerLoad

logger = logging.getLogger(__name__)

ROLES = ("prefill", "decode")


class RoleSwitchRefused(RuntimeError):
    """A role switch the worker will not make now (its minimum dwell time is not over)."""


class FlexWorker(PrefillWorker):
    """Args: those of ``PrefillWorker``, and ``role`` (the role it starts in: its pool's)
    and ``min_dwell_s`` (the least time between two switches)."""

    def __init__(self, worker_id: str, engine_config: EngineConfig, kv: KVTransferConfig,
                 store: StoreConfig | None = None, role: str = "prefill", min_dwell_s: float = 30.0):
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if min_dwell_s < 0:
            raise ValueError(f"min_dwell_s must be >= 0, got {min_dwell_s}")
        super().__init__(worker_id, engine_config, kv, store)
        self._prefilling: set[str] = set()     # prefill-only requests: not streamed by the decoder
        self.decoder = DecodeWorker(worker_id, None, kv, "decode", engine=self.engine, driver=self.driver,
                                    skip_ids=self._prefilling)
        self.decoder.incarnation = self.incarnation    # one actor, one incarnation
        self.role, self.role_since, self.min_dwell_s = role, time.time(), min_dwell_s

    # -- the role ----------------------------------------------------------------------------
    async def set_role(self, role: str, reason: str = "") -> dict:
        """Announce ``role`` from now on (the routers learn it from the next load report).
        Returns {"role", "previous", "since"}; the same role is a no-op."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        previous = self.role
        if role != previous:
            dwelt = time.time() - self.role_since
            if dwelt < self.min_dwell_s:
                raise RoleSwitchRefused(f"{self.worker_id} became {previous} {dwelt:.1f} s ago; it may "
                                        f"switch again after {self.min_dwell_s:.1f} s")
            self.role, self.role_since = role, time.time()
            logger.info("%s switches %s -> %s%s", self.worker_id, previous, role, f" ({reason})" if reason else "")
        return {"role": self.role, "previous": previous, "since": self.role_since}

    async def load(self, since_incarnation: str = "", since_version: int = 0) -> WorkerLoad:
        load = await super().load(since_incarnation, since_version)
        load.role, load.role_since = self.role, self.role_since
        return load

    # -- the prefill role (``PrefillWorker``), minus the stream ------------------------------
    async def prefill(self, req: PrefillRequest) -> PrefillResult:
        self._prefilling.add(req.request_id)
        try:
            return await super().prefill(req)
        finally:
            self._prefilling.discard(req.request_id)

    # -- the decode role: ``DecodeWorker``'s calls -------------------------------------------
    async def start(self, req: DecodeStart) -> int:
        return await self.decoder.start(req)

    async def submit(self, req: FullRequest) -> None:
        await self.decoder.submit(req)

    async def poll(self, cursor: int, timeout_s: float = 1.0,
                   linger_s: float = 0.0) -> tuple[str, int, list[StreamEvent]]:
        return await self.decoder.poll(cursor, timeout_s, linger_s)

    async def replay(self, request_id: str, key: str) -> tuple[str, list[StreamEvent]] | None:
        return await self.decoder.replay(request_id, key)

    async def abort(self, request_id: str) -> bool:
        return await self.decoder.abort(request_id)

    async def receives_in_flight(self) -> int:
        return await self.decoder.receives_in_flight()

    def shutdown(self) -> None:
        self.decoder.shutdown()      # its reaper and receive threads; the engine driver
        super().shutdown()           # the store's write-back (stopping the driver twice is a no-op)
