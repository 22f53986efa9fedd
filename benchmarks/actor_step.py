"""A decode step inside the decode worker actor against the same step on the bare engine.

    .venv/bin/python -m benchmarks.actor_step [--batches 1,8,32] [--reps 5] [--steps 40]
                                              [--no-baseline] [--stream-intervals 0,0.01]

Both sides run the "llama-8m" preset with one torch thread, the same prompts (``--prompt``
tokens, fresh per repetition) and the same number of decode steps. The bare engine is an
``LLMEngine`` in this process driven by ``step()`` in a loop. The actor is a real
``DecodeWorker`` (colocated role) on a local Ray, created with the pool's actor options,
with the router's streaming and load polling going on as in production: this process runs
``router.backends.stream_hub.StreamHub`` (one long-poll of ``poll()`` per worker) and
``router.backends.worker_registry.WorkerRegistry`` (``load()`` every second) against it, and every
request is a ``submit`` whose tokens arrive through the hub.

Runtimes measured against the same bare runs, each on its own actor:
- ``tandem``: the pool's actor options (``cluster.pools.pool_actor_options``) and the
  router's default ``router.stream_interval_s``;
- ``ray_defaults`` (unless ``--no-baseline``): the runtime before issue 13, Ray's default
  worker niceness (15) and a poll per engine step (interval 0);
- ``interval_<s>`` for each of ``--stream-intervals``: the pool's options at that interval.

The in-actor figure is the period between the starts of consecutive engine steps (what a
decoding request sees: the step plus everything the actor does between steps), measured in
the actor by a probe around ``engine.step``; ``step_ms`` is the step call alone. The bare
figure is the same period in a tight loop. The two sides alternate repetition by
repetition (bare, each runtime, bare, ...) so machine noise hits all alike.

Figures (one JSON line per batch and runtime, medians over repetitions of each
repetition's median): ``bare_ms``, ``actor_ms`` (period), ``actor_step_ms``, ``ratio`` =
actor_ms / bare_ms. A first line per runtime reports its actor's engine-thread niceness,
torch threads and switch interval; another this process's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from typing import Any

BENCH = "actor_step"
MODEL = "llama-8m"
ROLE = "colocated"


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": BENCH, **fields}), flush=True)


def engine_config():
    from engine import EngineConfig
    return EngineConfig(model=MODEL, num_threads=1, max_num_seqs=64)


def prompts(rep: int, batch: int, length: int, vocab: int) -> list[list[int]]:
    rng = random.Random(1000 * batch + rep)
    return [[1] + [rng.randrange(3, vocab) for _ in range(length - 1)] for _ in range(batch)]


def sampling(max_tokens: int) -> dict:
    from engine import SamplingParams
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True).to_dict()


# -- the bare engine ---------------------------------------------------------------------------
def bare_periods(engine, batch_prompts: list[list[int]], steps: int, warm: int) -> list[float]:
    """Per-step periods (ms) of ``steps`` decode steps after ``warm`` decode steps."""
    from engine import SamplingParams
    sp = SamplingParams.from_dict(sampling(steps + warm + 8))
    ids = [f"bare-{time.monotonic_ns()}-{i}" for i in range(len(batch_prompts))]
    for rid, p in zip(ids, batch_prompts):
        engine.add_request(rid, p, sp)
    started: set[str] = set()
    while len(started) < len(ids):                 # every prompt computed, first token out
        started |= {o.request_id for o in engine.step()}
    for _ in range(warm):
        engine.step()
    marks = []
    for _ in range(steps + 1):
        marks.append(time.perf_counter())
        engine.step()
    for rid in ids:
        engine.abort(rid)
    while engine.has_unfinished():
        engine.step()
    return [1000 * (b - a) for a, b in zip(marks, marks[1:])]


# -- the probe, run inside the actor -----------------------------------------------------------
def _install_probe(worker: Any) -> dict:
    """Wrap ``engine.step`` to log (start, end, outputs) of every step; report the settings."""
    import threading
    import time as _time

    import torch
    engine = worker.engine
    if "_actor_step_probe" not in engine.__dict__:
        log: list[tuple[float, float, int]] = []
        step = engine.step

        def timed_step():
            t0 = _time.perf_counter()
            out = step()
            log.append((t0, _time.perf_counter(), len(out)))
            return out

        engine.step = timed_step
        engine.__dict__["_actor_step_probe"] = log
    engine_threads, engine_nice = worker.driver.submit(lambda e: (
        torch.get_num_threads(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))).result(10)
    return {"pid": os.getpid(), "engine_thread_nice": engine_nice, "torch_threads_engine_thread": engine_threads,
            "torch_threads_loop_thread": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "switchinterval_s": sys.getswitchinterval(), "threads": threading.active_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def _probe_take(worker: Any) -> list[tuple[float, float, int]]:
    log = worker.engine.__dict__["_actor_step_probe"]
    got = log[:]
    del log[:len(got)]
    return got


class ActorSide:
    """One DecodeWorker actor with the router's stream hub and load poller against it."""

    def __init__(self, name: str, interval_s: float, nice_fix: bool = True) -> None:
        import ray

        from cluster.pools import pool_actor_options
        from router.backends.stream_hub import StreamHub
        from router.backends.worker_registry import WorkerRegistry
        from decode_worker.worker import DecodeWorker
        from kv_transfer.config import KVTransferConfig
        opts = pool_actor_options()
        if not nice_fix:      # what pool actors got before: Ray's default worker niceness
            opts.pop("runtime_env")
        self.name = name
        actor = ray.remote(DecodeWorker).options(name=name, num_cpus=1, max_restarts=0, **opts)
        self.handle = actor.remote(name, engine_config(), KVTransferConfig(), ROLE)
        self.settings = ray.get(self.handle.__ray_call__.remote(_install_probe), timeout=300)
        self.registry = WorkerRegistry({ROLE: {name: self.handle}}, poll_s=1.0)
        self.hub = StreamHub(self.registry, (ROLE,), interval_s)

    async def start(self) -> None:
        await self.registry.refresh_once()
        self.registry.start()
        self.hub.start()

    async def stop(self) -> None:
        await self.hub.stop()
        await self.registry.stop()

    async def periods(self, rep: int, batch_prompts: list[list[int]], steps: int,
                      warm: int) -> tuple[list[float], list[float]]:
        """(periods, step times) in ms of ``steps`` steps of the whole batch decoding."""
        from decode_worker.messages import FullRequest
        ids = [f"actor-{rep}-{time.monotonic_ns()}-{i}" for i in range(len(batch_prompts))]
        queues = [self.hub.subscribe(rid, self.name) for rid in ids]
        params = sampling(10 * (steps + warm) + 64)   # ended by abort, never by length
        await asyncio.gather(*(_ray(self.handle.submit.remote(FullRequest(rid, p, params)))
                               for rid, p in zip(ids, batch_prompts)))
        for q in queues:                             # every request has streamed a token
            while not (await q.get()).token_ids:
                pass
        for _ in range(warm):                        # the consumer keeps pace, as a router would
            await asyncio.gather(*(q.get() for q in queues))
        await _ray(self.handle.__ray_call__.remote(_probe_take))
        log: list[tuple[float, float, int]] = []
        while len(log) < steps + 1:
            await asyncio.sleep(0.2)
            for q in queues:
                while not q.empty():
                    q.get_nowait()
            log += await _ray(self.handle.__ray_call__.remote(_probe_take))
        await asyncio.gather(*(_ray(self.handle.abort.remote(rid)) for rid in ids))
        for rid in ids:
            self.hub.unsubscribe(rid)
        log = log[:steps + 1]
        if any(n != len(ids) for _, _, n in log):
            raise RuntimeError(f"a measured step did not hold the whole batch: {[n for *_, n in log]}")
        periods = [1000 * (b[0] - a[0]) for a, b in zip(log, log[1:])]
        return periods, [1000 * (t1 - t0) for t0, t1, _ in log[:-1]]


async def _ray(ref):
    return await asyncio.wrap_future(ref.future())


def runtimes(args: argparse.Namespace) -> list[tuple[str, float, bool]]:
    """(name, stream interval, pool actor options?) of every runtime to measure."""
    from router.config import RouterConfig
    out = [("tandem", RouterConfig().stream_interval_s, True)]
    if args.baseline:
        out.append(("ray_defaults", 0.0, False))
    out += [(f"interval_{iv:g}", iv, True) for iv in args.stream_intervals]
    return out


async def run(args: argparse.Namespace) -> None:
    import torch

    from engine import LLMEngine
    torch.set_num_threads(1)
    engine = LLMEngine(engine_config())
    vocab = engine.model_config.vocab_size
    emit(figure="settings", runtime="bare", model=MODEL, prompt_tokens=args.prompt, steps=args.steps,
         reps=args.reps, torch_threads=torch.get_num_threads(), nice=os.nice(0),
         switchinterval_s=sys.getswitchinterval())
    sides: dict[str, ActorSide] = {}
    for i, (name, iv, nice_fix) in enumerate(runtimes(args)):
        sides[name] = ActorSide(f"{ROLE}-{i}", iv, nice_fix)
        emit(figure="settings", runtime=name, stream_interval_s=iv, **sides[name].settings)
    for side in sides.values():
        await side.start()
    try:
        for batch in args.batches:
            bare: list[float] = []
            actor: dict[str, list[float]] = {n: [] for n in sides}
            actor_step: dict[str, list[float]] = {n: [] for n in sides}
            for rep in range(args.reps + 1):           # repetition 0 warms every side up
                ps = prompts(rep, batch, args.prompt, vocab)
                b = bare_periods(engine, ps, args.steps, args.warm)
                if rep:
                    bare.append(statistics.median(b))
                for name, side in sides.items():
                    a, st = await side.periods(rep, ps, args.steps, args.warm)
                    if rep:
                        actor[name].append(statistics.median(a))
                        actor_step[name].append(statistics.median(st))
            bm = statistics.median(bare)
            for name, side in sides.items():
                am = statistics.median(actor[name])
                emit(figure="decode_step", batch=batch, runtime=name, stream_interval_s=side.hub.interval_s,
                     bare_ms=round(bm, 3), actor_ms=round(am, 3),
                     actor_step_ms=round(statistics.median(actor_step[name]), 3), ratio=round(am / bm, 3),
                     bare_all=[round(x, 3) for x in bare], actor_all=[round(x, 3) for x in actor[name]])
    finally:
        for side in sides.values():
            await side.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="measured decode steps per repetition")
    parser.add_argument("--warm", type=int, default=5, help="decode steps before measuring")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the ray_defaults runtime (the runtime before issue 13)")
    parser.add_argument("--stream-intervals", default="",
                        help="comma-separated stream intervals (s) to measure as extra runtimes")
    args = parser.parse_args()
    args.batches = [int(x) for x in args.batches.split(",")]
    args.stream_intervals = [float(x) for x in args.stream_intervals.split(",") if x]
    import ray
    for key, value in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                       "LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1"}.items():
        os.environ.setdefault(key, value)
    ray.init(num_cpus=2 + len(args.stream_intervals), include_dashboard=False, log_to_driver=False,
             configure_logging=False, namespace=f"actor-step-{os.getpid()}")
    try:
        asyncio.run(run(args))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
