"""The rebalancing controller: a task in the router process that reads the load every worker
reported to the router (``WorkerRegistry``), asks ``RebalancePolicy`` whether a worker should
switch, and asks that worker (``FlexWorker.set_role``).

Every decision is logged with its inputs and exported as metrics in the router's registry:
``tandem_rebalance_switches_total{from_role,to_role}``, and the inputs of the last reading,
``tandem_rebalance_pressure{pool}``, ``tandem_rebalance_prefill_queue_seconds``,
``tandem_rebalance_decode_step_ms``, ``tandem_rebalance_decode_kv_use``. Every router of a
cluster may run one: before a switch each claims the cluster's ``SwitchLease`` (one grant per
cooldown, whichever router asks: ``cluster.rebalance.lease``), a switch reaches the others
through the load reports (they count it in their cooldown), and the worker refuses a second
switch within its dwell time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from cluster.rebalance.config import RebalanceConfig
from cluster.rebalance.lease import SwitchLease
from cluster.rebalance.policy import Decision, Reading, RebalancePolicy

logger = logging.getLogger(__name__)

SWITCH_TIMEOUT_S = 10.0


class RebalanceController:
    """Args:
        registry: the router backend's ``WorkerRegistry`` (its views and their last loads).
        cfg, ttft_ms, tpot_ms: ``rebalance:`` and the objectives (``slo:``).
        router_queued_tokens: the prompt tokens the router's admission holds (0 without).
        metrics_registry: a prometheus ``CollectorRegistry`` to export into (None: none).
        lease: the cluster's ``SwitchLease`` (a local one, or the Ray actor every router
            shares: ``ray_lease``); None: this controller's own.
        name: this controller's name in the lease.
    """

    def __init__(self, registry: Any, cfg: RebalanceConfig, ttft_ms: float, tpot_ms: float,
                 router_queued_tokens: Callable[[], int] = lambda: 0, metrics_registry: Any = None,
                 lease: Any = None, name: str = "router"):
        self.registry, self.cfg = registry, cfg
        self.lease = lease if lease is not None else SwitchLease()
        self.name = name
        self.policy = RebalancePolicy(cfg, ttft_ms, tpot_ms, started=time.time())
        self.router_queued_tokens = router_queued_tokens
        self._task: asyncio.Task | None = None
        self._metrics = _Metrics(metrics_registry) if metrics_registry is not None else None

    def readings(self) -> list[Reading]:
        out = []
        for role in ("prefill", "decode"):
            for view in self.registry.healthy(role):
                load = view.last_load
                if load is None:
                    continue
                total = load.total_kv_blocks or 1
                out.append(Reading(view.name, role, load.role_since, load.queued_prompt_tokens,
                                   load.prefill_tokens_per_s, load.step_ms, load.running,
                                   1 - load.free_kv_blocks / total, load.queue_depth))
        return out

    async def tick(self) -> Decision | None:
        """One reading and, if the policy says so, one switch (made before this returns)."""
        readings = self.readings()
        decision = self.policy.decide(readings, time.time(), self.router_queued_tokens())
        if self._metrics is not None:
            self._metrics.observe(self.policy.last)
        if decision is None:
            return None
        p = decision.pressure
        if not await self._claim():
            logger.info("rebalance: %s %s -> %s wanted (%s), but another router switched a worker "
                        "within the cooldown", decision.worker, decision.from_role, decision.to_role,
                        decision.reason)
            return None
        logger.info("rebalance: %s %s -> %s: %s (prefill queue %.3f s, decode step %.2f ms, decode KV %.0f%%)",
                    decision.worker, decision.from_role, decision.to_role, decision.reason,
                    p.prefill_queue_s, p.decode_step_ms, 100 * p.decode_kv_use)
        try:
            await self.switch(decision.worker, decision.to_role, decision.reason)
        except Exception as exc:     # refused (dwell: another router switched it), or gone
            logger.warning("rebalance: %s did not switch: %s", decision.worker, exc)
            return None
        return decision

    async def _claim(self) -> bool:
        claim = self.lease.claim
        if hasattr(claim, "remote"):                  # the Ray actor
            async with asyncio.timeout(SWITCH_TIMEOUT_S):
                return await claim.remote(self.name, self.cfg.cooldown_s)
        return claim(self.name, self.cfg.cooldown_s)

    async def switch(self, worker: str, role: str, reason: str = "requested") -> None:
        """Switch ``worker`` to ``role`` now (the policy's decisions, or an operator's):
        ValueError if that would leave its pool below its minimum (or names no worker or
        role); the worker's refusal (``RoleSwitchRefused``) as it came."""
        if role not in ("prefill", "decode"):
            raise ValueError(f"role must be prefill or decode, got {role!r}")
        try:
            source = self.registry.role_of(worker)
        except KeyError:
            raise ValueError(f"no worker {worker!r}") from None
        if source == role:
            return
        floor = self.cfg.min_decode if source == "decode" else self.cfg.min_prefill
        if len(self.registry.healthy(source, exclude={worker})) < floor:
            raise ValueError(f"switching {worker} would leave fewer than {floor} healthy {source} worker(s)")
        view = self.registry.get(worker)
        async with asyncio.timeout(SWITCH_TIMEOUT_S):
            await view.handle.set_role.remote(role, reason)
        # This router acts on it at once; the others learn it from the worker's next report.
        self.registry.move(worker, role)
        if self._metrics is not None:
            self._metrics.switches.labels(source, role).inc()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval_s)
            try:
                await self.tick()
            except Exception:
                logger.exception("rebalance tick failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class _Metrics:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge
        self.switches = Counter("tandem_rebalance_switches", "Workers switched between roles by the "
                                "rebalancing controller", ("from_role", "to_role"), registry=registry)
        self.pressure = Gauge("tandem_rebalance_pressure", "A pool's pressure at the last reading "
                              "(1: at its objective)", ("pool",), registry=registry)
        self.queue = Gauge("tandem_rebalance_prefill_queue_seconds", "Estimated prefill queue time at "
                           "the last reading", registry=registry)
        self.step = Gauge("tandem_rebalance_decode_step_ms", "Slowest recent decode engine step at the "
                          "last reading", registry=registry)
        self.kv = Gauge("tandem_rebalance_decode_kv_use", "Fullest decode KV pool at the last reading",
                        registry=registry)

    def observe(self, p) -> None:
        self.pressure.labels("prefill").set(p.prefill)
        self.pressure.labels("decode").set(p.decode)
        self.queue.set(p.prefill_queue_s)
        self.step.set(p.decode_step_ms)
        self.kv.set(p.decode_kv_use)
