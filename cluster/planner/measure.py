"""``tandem profile``: measure a worker's costs with the real engine on this host and fit the
profile's latency model (``cluster.planner.profile``) to them.

- prefill: one prompt at a time of several lengths (up to half the context), each computed
  alone (``max_tokens=1``), median of ``reps``; fitted ``base + a*n + b*n^2`` by least squares;
- decode: a batch of b sequences decoding together (prompts of ``ctx`` tokens), the median
  step after every sequence has its first token, for several b; fitted ``base + a*b + c*C``;
- hand-off: the model's KV bytes per token from the engine's layout, the transport's
  bandwidth from a KV blob of 2,048 tokens encoded and decoded with the raw codec (the
  lossless default), and a fixed cost: measured through a running 1 prefill + 1 decode
  cluster (``serve_samples(mode="disaggregated")``, ``handoff_from``: what a request's
  stream takes after its first token beyond its decode steps and its KV's bytes), or
  ``HANDOFF_BASE_MS`` without a cluster;
- limits: the engine's ``max_num_seqs`` and its KV pool in tokens;
- overhead (``measure_overhead``): the engine above runs in this process; a served request
  also pays the router, the worker's calls and streaming, and a pool worker's steps run
  slower than the bare engine's (docs/serving.md, "The worker runtime, measured"): measured
  through a one-worker colocated cluster started for it.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from cluster.planner.profile import DecodeCost, HandoffCost, Limits, Overhead, PrefillCost, Profile

logger = logging.getLogger(__name__)

HANDOFF_BASE_MS = 5.0    # the hand-off's fixed cost when no cluster measures it (through_cluster=False)


def _fit(rows: list[list[float]], ys: list[float]) -> list[float]:
    """Non-negative least squares by clamping: fit, drop negative terms, refit."""
    a, y = np.array(rows, dtype=float), np.array(ys, dtype=float)
    keep = list(range(a.shape[1]))
    while True:
        coef, *_ = np.linalg.lstsq(a[:, keep], y, rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            out = [0.0] * a.shape[1]
            for i, c in zip(keep, coef):
                out[i] = max(0.0, float(c))
            return out
        keep = [k for k, c in zip(keep, coef) if c >= 0] or keep[:1]


def measure(model: str = "stories260K", threads: int = 1, reps: int = 5, name: str | None = None,
            hardware: str = "this host", through_cluster: bool = True) -> Profile:
    """The engine's costs (``through_cluster``: and what a running cluster adds to them,
    ``measure_overhead``)."""
    import torch

    from engine import EngineConfig, SamplingParams
    from engine.llm_engine import LLMEngine

    torch.set_num_threads(threads)
    engine = LLMEngine(EngineConfig(model=model, num_threads=threads))
    vocab = engine.model_config.vocab_size
    max_len = engine.max_model_len
    rng = np.random.default_rng(0)

    def ids(n: int) -> list[int]:
        return [int(x) for x in rng.integers(3, vocab, n)]

    def run_alone(n: int) -> float:
        engine.add_request(f"p{time.monotonic_ns()}", ids(n), SamplingParams(max_tokens=1, temperature=0))
        t0 = time.perf_counter()
        while engine.has_unfinished():
            engine.step()
        return (time.perf_counter() - t0) * 1e3

    lengths = sorted({max(8, int(max_len * f)) for f in (0.03, 0.06, 0.12, 0.25, 0.5)})
    run_alone(lengths[0])                                   # warm-up
    pre_rows, pre_ms = [], []
    for n in lengths:
        ms = statistics.median(run_alone(n) for _ in range(reps))
        pre_rows.append([1.0, n, n * n])
        pre_ms.append(ms)
        logger.info("prefill %d tokens: %.2f ms", n, ms)
    prefill = PrefillCost(*_fit(pre_rows, pre_ms))

    ctx = max(8, min(64, max_len // 8))
    batches = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= engine.config.max_num_seqs]
    dec_rows, dec_ms = [], []
    for b in batches:
        steps = 12
        for i in range(b):
            engine.add_request(f"d{b}-{i}-{time.monotonic_ns()}", ids(ctx),
                               SamplingParams(max_tokens=steps + 4, temperature=0, ignore_eos=True))
        while any(len(s.token_ids) <= s.prompt_len for s in engine.requests.values()):
            engine.step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            engine.step()
            times.append((time.perf_counter() - t0) * 1e3)
        context = sum(len(s.token_ids) for s in engine.requests.values())
        while engine.has_unfinished():
            engine.step()
        dec_rows.append([1.0, b, context])
        dec_ms.append(statistics.median(times))
        logger.info("decode batch %d (%d context tokens): %.2f ms a step", b, context, dec_ms[-1])
    decode = DecodeCost(*_fit(dec_rows, dec_ms))

    layout = engine.kv_layout
    per_token = int(2 * layout.num_layers * layout.num_kv_heads * layout.head_dim
                    * {"float32": 4, "bfloat16": 2, "float16": 2}[layout.dtype])
    gbps = _codec_gbps(layout)
    limits = Limits(max_batch=engine.config.max_num_seqs,
                    kv_tokens=engine.pool.num_blocks * engine.config.block_size)
    prof = Profile(name or f"{model}-cpu{threads}", hardware, "measured", per_token, threads, 0,
                   prefill, decode, HandoffCost(HANDOFF_BASE_MS, gbps), limits,
                   notes={"model": model, "prefill_points": dict(zip(map(str, lengths), pre_ms)),
                          "decode_points": {str(b): m for b, m in zip(batches, dec_ms)}})
    if through_cluster:
        prof.overhead = measure_overhead(prof, model, threads, reps)
        prof.handoff = handoff_from(prof, serve_samples(model, threads, reps, batch=0,
                                                               mode="disaggregated"))
        logger.info("hand-off: %.1f ms fixed + %.2f GB/s", prof.handoff.base_ms, prof.handoff.gb_per_s)
    return prof


@dataclass(slots=True)
class Served:
    """Requests served by a running cluster, for ``overhead_from``: ``alone`` one stream at a
    time (prompt ``prompt`` tokens, ``out`` tokens each) as (TTFT, end-to-end) ms pairs;
    ``batched`` the wall ms of ``batch`` streams sent at once (prompts ``short`` tokens)."""
    prompt: int
    short: int
    out: int
    batch: int
    alone: list[tuple[float, float]] = field(default_factory=list)
    batched: list[float] = field(default_factory=list)
    cpu_ms: float = 0.0               # this process's CPU (router + client) over the timed requests
    tokens: int = 0                   # tokens streamed in them
    outputs: list[tuple[list[int], list[int]]] = field(default_factory=list)   # (prompt, completion)


def overhead_from(prof: Profile, served: Served) -> Overhead:
    """The serving overhead on ``prof``'s engine costs that makes it predict ``served``: the
    TTFT overhead is the served TTFT less the engine's prefill; the step factor the served
    step over the engine's step, at batch 1 and at ``served.batch`` (the batch decodes
    together after its prompts: wall less the prefills, per step). Medians; a served request
    faster than the engine's figure gives no overhead (0 ms) rather than a negative one. The
    router's and client's CPU per streamed token is ``served.cpu_ms / served.tokens``."""
    if not served.alone:
        raise ValueError("served: no request served alone")
    ttft_over, factors = [], []
    for ttft, e2e in served.alone:
        ttft_over.append(ttft - prof.prefill.ms(served.prompt))
        step = (e2e - ttft) / (served.out - 1)
        factors.append(step / prof.decode.ms(1, served.prompt + served.out // 2))
    for wall in served.batched:
        step = (wall - served.batch * prof.prefill.ms(served.short)) / (served.out - 1)
        factors.append(step / prof.decode.ms(served.batch, served.batch * (served.short + served.out // 2)))
    factor = statistics.median(factors)
    if factor <= 0:
        raise ValueError(f"served: a step factor of {factor:.3f} (the batch's prefills exceed its wall time)")
    cpu = served.cpu_ms / served.tokens if served.tokens else 0.0
    return Overhead(max(0.0, statistics.median(ttft_over)), factor, cpu)


def handoff_from(prof: Profile, served: Served) -> HandoffCost:
    """The hand-off's cost on ``prof``'s engine and serving costs that makes it predict
    ``served`` (requests served alone by a disaggregated cluster): after its first token a
    request's stream takes the hand-off plus ``out - 1`` served decode steps, so the
    hand-off is what is left of (end-to-end - TTFT); its fixed part is that less the KV's
    bytes at ``prof.handoff``'s bandwidth. Median; never below 0."""
    if not served.alone:
        raise ValueError("served: no request served alone")
    step = prof.overhead.step_factor * prof.decode.ms(1, served.prompt + served.out // 2)
    nbytes = served.prompt * prof.kv_bytes_per_token
    left = [(e2e - ttft) - (served.out - 1) * step for ttft, e2e in served.alone]
    base = statistics.median(left) - nbytes / (prof.handoff.gb_per_s * 1e6)
    return HandoffCost(max(0.0, base), prof.handoff.gb_per_s)


def serve_samples(model: str, threads: int, reps: int = 5, prompt: int = 256, out: int = 33,
                  batch: int = 8, short: int = 64, mode: str = "colocated") -> Served:
    """Greedy requests through a cluster on this host, sent with the SDK: ``reps`` alone,
    ``reps // 2`` batches of ``batch`` (0: none). ``mode``: colocated, one worker (a Ray actor behind the router);
    disaggregated, one prefill and one decode worker (the KV hand-off between them)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    for key, value in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                       "LMCACHE_TRACK_USAGE": "false"}.items():
        os.environ.setdefault(key, value)
    from cluster.config import load_config
    from cluster.testing import BackgroundCluster
    from tandem_client import TandemClient

    if mode not in ("colocated", "disaggregated"):
        raise ValueError(f"mode must be colocated or disaggregated, got {mode!r}")
    cfg = load_config(None, [f"model.model={model}", f"model.num_threads={threads}", f"mode={mode}",
                             "pools.decode.workers=1", f"pools.decode.cpus_per_worker={threads}",
                             "pools.prefill.workers=1", f"pools.prefill.cpus_per_worker={threads}",
                             "store.enabled=false", "router.admission.enabled=false", "router.grpc_port=0",
                             "router.prefill_overflow=false"])   # each phase where its pool is
    rng = np.random.default_rng(2)
    served = Served(prompt, short, out, batch)
    with BackgroundCluster(cfg) as cluster, TandemClient(cluster.target, timeout=120) as client:
        vocab = client.model_info().vocab_size

        def one(n: int, tokens: int):
            ids = [int(x) for x in rng.integers(3, vocab, n)]
            res = client.generate(token_ids=ids, max_tokens=tokens, temperature=0, ignore_eos=True)
            served.outputs.append((ids, list(res.token_ids)))
            return res

        one(prompt, 2)                                              # warm-up
        cpu0 = time.process_time()
        for _ in range(reps):
            t0 = time.perf_counter()
            res = one(prompt, out)
            served.alone.append((res.usage.ttft_ms, (time.perf_counter() - t0) * 1e3))
        if batch:
            with ThreadPoolExecutor(batch) as pool:
                for _ in range(max(1, reps // 2)):
                    t0 = time.perf_counter()
                    list(pool.map(lambda _: one(short, out), range(batch)))
                    served.batched.append((time.perf_counter() - t0) * 1e3)
        served.cpu_ms = (time.process_time() - cpu0) * 1e3
        served.tokens = sum(len(c) for _, c in served.outputs[1:])
    return served


def measure_overhead(prof: Profile, model: str, threads: int, reps: int = 5) -> Overhead:
    """What a running cluster adds to ``prof``'s engine costs (``overhead_from`` on
    ``serve_samples``)."""
    overhead = overhead_from(prof, serve_samples(model, threads, reps))
    logger.info("serving overhead: %.1f ms per first token, steps x%.2f", overhead.ttft_ms, overhead.step_factor)
    return overhead


def _codec_gbps(layout, tokens: int = 2048) -> float:
    """KV bytes through the raw codec as the hand-off runs it: encode, join the buffers (the
    copy into the transport), decode into a preallocated tensor; GB/s, best of five."""
    import torch

    from kv_transfer.codecs import GroupShape, get_codec

    dtype = getattr(torch, layout.dtype)
    kv = torch.randn(layout.num_layers, 2, tokens, layout.num_kv_heads, layout.head_dim).to(dtype)
    codec, shape, out = get_codec("raw"), GroupShape.of(kv), torch.empty_like(kv)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        payload = b"".join(bytes(b) for b in codec.encode(kv))
        codec.decode(memoryview(payload), shape, dtype, out=out)
        best = min(best, time.perf_counter() - t0)
    return kv.numel() * kv.element_size() / best / 1e9
