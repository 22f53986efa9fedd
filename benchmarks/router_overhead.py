"""Router overhead: what the gRPC front end adds over calling the backend directly.

    .venv/bin/python -m benchmarks.router_overhead [--quick]

This process hosts the backend and the router (as in production: router and backend in
one process, pools behind it); a separate client process drives the router through the
SDK, so client and server do not share a GIL. Direct baselines call the same backend
object in this process, in the same run, alternating with the routed rounds. Backends:
``null`` (yields tokens at once: the router's own cost) and ``local`` (stories260K).
One JSON line per figure on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

from router.config import RouterConfig
from router.backend import Backend
from router.messages import (
    ClusterInfo, Finished, FinishReason, GenerateRequest, ModelInfo, SamplingOptions, TokenDelta,
    Usage,
)
from router.testing import BackgroundRouter

PROMPT = [1, 403, 407, 261, 376]


class NullBackend(Backend):
    """Yields ``max_tokens`` tokens immediately: isolates the router's own cost."""

    class _Bytes:
        def encode(self, text: str) -> list[int]:
            return list(text.encode())

    @property
    def tokenizer(self):
        return self._Bytes()

    async def generate(self, request: GenerateRequest) -> AsyncIterator:
        n = request.sampling.max_tokens
        for i in range(n - 1):
            yield TokenDelta([i % 256], "x", i)
        yield Finished(FinishReason.LENGTH, Usage(len(request.prompt_token_ids), 0, n, 0.0,
                                                  "null", "null"), TokenDelta([0], "x", n - 1))

    async def model_info(self) -> ModelInfo:
        return ModelInfo("null", vocab_size=512, max_model_len=1 << 20, block_size=16, dtype="none")

    async def cluster_info(self) -> ClusterInfo:
        return ClusterInfo("colocated", [], True)

    async def health(self) -> bool:
        return True


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# -- direct baselines (run on the router's loop, the backend's home) ----------------------
async def _direct_one(backend: Backend, i: int, max_tokens: int) -> int:
    req = GenerateRequest(f"direct-{i}", list(PROMPT), SamplingOptions(max_tokens=max_tokens,
                          temperature=0.0, ignore_eos=True), arrival_time=time.monotonic())
    n = 0
    async for event in backend.generate(req):
        delta = event.delta if isinstance(event, Finished) else event
        if delta is not None:
            n += len(delta.token_ids)
    return n


async def direct_latencies(backend: Backend, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await _direct_one(backend, i, 1)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def direct_throughput(backend: Backend, requests: int, concurrency: int,
                            max_tokens: int) -> tuple[float, int]:
    """(seconds, tokens) for ``requests`` requests at ``concurrency`` in flight."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with sem:
            return await _direct_one(backend, i, max_tokens)
    t = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(requests))))
    return time.perf_counter() - t, tokens


# -- the client process ------------------------------------------------------------------
def client_main(args: argparse.Namespace) -> None:
    from tandem_client import AsyncTandemClient, TandemClient
    if args.client == "latency":
        with TandemClient(args.target, timeout=60) as c:
            c.generate(token_ids=PROMPT, max_tokens=1)   # connect
            lat = []
            for _ in range(args.n):
                t = time.perf_counter()
                c.generate(token_ids=PROMPT, max_tokens=1, temperature=0.0)
                lat.append((time.perf_counter() - t) * 1000)
        print(json.dumps({"latencies_ms": lat}))
        return

    async def run() -> dict:
        async with AsyncTandemClient(args.target, timeout=120) as c:
            await c.generate(token_ids=PROMPT, max_tokens=1)
            sem = asyncio.Semaphore(args.concurrency)

            async def one() -> int:
                async with sem:
                    n = 0
                    async for d in c.stream(token_ids=PROMPT, max_tokens=args.tokens,
                                            temperature=0.0, ignore_eos=True):
                        n += len(d.token_ids)
                    return n
            t = time.perf_counter()
            tokens = sum(await asyncio.gather(*(one() for _ in range(args.n))))
            return {"seconds": time.perf_counter() - t, "tokens": tokens}
    print(json.dumps(asyncio.run(run())))


def run_client(target: str, kind: str, n: int, concurrency: int = 1, tokens: int = 1) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.router_overhead", "--client", kind, "--target",
           target, "--n", str(n), "--concurrency", str(concurrency), "--tokens", str(tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"client failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- figures -------------------------------------------------------------------------------
def emit(**fields) -> None:
    print(json.dumps({"bench": "router_overhead", **fields}), flush=True)


def bench_latency(router: BackgroundRouter, name: str, n: int, rounds: int) -> None:
    direct, routed = [], []
    for _ in range(rounds):
        direct += router.call(direct_latencies(router.backend, n), timeout=600)
        routed += run_client(router.target, "latency", n)["latencies_ms"]
    d50, d99, r50, r99 = (_pct(direct, .5), _pct(direct, .99), _pct(routed, .5), _pct(routed, .99))
    emit(figure="added_latency_1_token", backend=name, n=len(routed),
         added_p50_ms=round(r50 - d50, 3), added_p99_ms=round(r99 - d99, 3),
         router_p50_ms=round(r50, 3), router_p99_ms=round(r99, 3),
         direct_p50_ms=round(d50, 3), direct_p99_ms=round(d99, 3), target_added_p50_ms=1.0)


def bench_rate(router: BackgroundRouter, name: str, n: int, concurrency: int) -> None:
    secs, _ = router.call(direct_throughput(router.backend, n, concurrency, 1), timeout=600)
    routed = run_client(router.target, "stream", n, concurrency, 1)
    rate, direct_rate = n / routed["seconds"], n / secs
    emit(figure="admitted_rate_1_token", backend=name, requests=n, concurrency=concurrency,
         router_req_per_s=round(rate, 1), direct_req_per_s=round(direct_rate, 1),
         ratio_router_vs_direct=round(rate / direct_rate, 3), target_req_per_s=1000)


def bench_stream(router: BackgroundRouter, name: str, tokens: int, streams_per_level: int) -> None:
    for conc in (1, 8, 32):
        n = max(conc, streams_per_level)
        secs, dtok = router.call(direct_throughput(router.backend, n, conc, tokens), timeout=600)
        routed = run_client(router.target, "stream", n, conc, tokens)
        r_us, d_us = routed["seconds"] / routed["tokens"] * 1e6, secs / dtok * 1e6
        emit(figure="stream_cost_per_token", backend=name, concurrency=conc,
             tokens_per_stream=tokens, streams=n, router_us_per_token=round(r_us, 2),
             direct_us_per_token=round(d_us, 2), added_us_per_token=round(r_us - d_us, 2),
             router_tokens_per_s=round(routed["tokens"] / routed["seconds"], 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--client", choices=["latency", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    scale = 0.2 if args.quick else 1.0
    cfg = RouterConfig(grpc_port=0, max_inflight=4096)
    with BackgroundRouter(NullBackend(), cfg) as router:
        bench_latency(router, "null", int(500 * scale), rounds=3)
        bench_rate(router, "null", int(5000 * scale), concurrency=64)
        bench_stream(router, "null", tokens=256, streams_per_level=int(64 * scale))
    from engine import LLM
    from router.backends.local import LocalBackend
    with BackgroundRouter(LocalBackend(LLM(model="stories260K", max_num_seqs=32, num_threads=1)), cfg) as router:
        bench_latency(router, "local-stories260K", int(200 * scale), rounds=3)
        bench_rate(router, "local-stories260K", int(1000 * scale), concurrency=32)


if __name__ == "__main__":
    main()
