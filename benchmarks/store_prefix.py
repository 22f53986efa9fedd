"""Prefix reuse through the global store: TTFT cold vs warm (DRAM tier, Redis tier).

    .venv/bin/python -m benchmarks.store_prefix [--quick] [--reps R] [--models a,b] [--codecs raw,int8]

For each model a prompt whose first part was computed before by another request:
llama-100m (random weights, 12 layers): 4,096 tokens, 3,584 cached, chunk 256;
stories260K (context 512): 448 tokens, 384 cached, chunk 32 (the same 7/8 share, scaled).
Cases, each a median over repetitions of one request's time to first token in the real
prefill worker (plan + fetch + prefill of the rest, as the worker times them; its KV hand-off
excluded), against ``cold`` (the same worker code, no store) measured in the same run:
- ``warm_dram``: the prefix sits in the worker's DRAM tier (LMCache local CPU);
- ``warm_redis``: DRAM tier emptied before each request, the prefix comes from Redis;
- ``forced_fetch_redis``: as warm_redis but the controller is told recompute is very slow,
  i.e. what fetching costs when the controller would not have chosen it.
Cases are interleaved repetition by repetition (noise hits all alike); the controller gets
the prefill speed of two warm-up cold runs. Codecs: ``raw`` and the
best lossy codec, picked in the same run (fastest estimated fetch + decode among those whose
relative KV error is <= 5% on this model's real prefix KV); ``--codecs`` overrides.
Last, a bookkeeping replay of the Mooncake conversation trace's prefix structure: hit rate
with one global store vs per-worker caches only, 4 workers, round-robin routing.
One JSON line per figure on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections import OrderedDict

import torch

from engine import EngineConfig, SamplingParams
from kv_transfer.codecs import available_codecs, is_lossless
from kv_transfer.redis_server import RedisServer
from kv_transfer.store import PrefixCacheClient, StoreConfig
from kv_transfer.store.values import ValueCodec
from prefill_worker.testing import InProcessPrefill

BENCH = "store_prefix"
TRACE = "/work/shared/traces/mooncake_conversation_trace.jsonl"
SETUPS = {  # model: (prompt tokens, cached prefix tokens, store chunk, repetition factor)
    "llama-100m": (4096, 3584, 256, 1),
    "stories260K": (448, 384, 32, 8),   # milliseconds per request: more repetitions
}
PARAMS = SamplingParams(max_tokens=2, temperature=0.0)  # parks after the first token


def emit(**fields) -> None:
    print(json.dumps({"bench": BENCH, **fields}), flush=True)


def ttft_s(result) -> float:
    """The worker's own plan + fetch + prefill time of one request (its KV hand-off excluded)."""
    return (result.timings_ms["store_ms"] + result.timings_ms["prefill_ms"]) / 1000


def step_until_first(engine, request_id: str):
    while True:
        for out in engine.step():
            if out.request_id == request_id:
                return out


def pick_lossy(engine, prefix: list[int], chunk: int, redis_bps: float) -> tuple[str, list[dict]]:
    """The lossy codec with the lowest fetch + decode estimate among the accurate ones."""
    layout = engine.kv_layout
    kv = _prefix_kv(engine, prefix[:chunk])
    rows = []
    for name in available_codecs():
        if is_lossless(name):
            continue
        values = ValueCodec(layout, name)
        blob = values.encode(kv)
        started = time.perf_counter()
        for _ in range(3):
            out = values.decode(blob, chunk)
        decode_s = (time.perf_counter() - started) / 3
        err = float((out - kv).norm() / kv.norm())
        rows.append({"codec": name, "ratio": kv.numel() * kv.element_size() / len(blob),
                     "decode_s_per_chunk": decode_s, "rel_err": err,
                     "est_fetch_s_per_chunk": decode_s + len(blob) / redis_bps})
    ok = [r for r in rows if r["rel_err"] <= 0.05] or rows
    return min(ok, key=lambda r: r["est_fetch_s_per_chunk"])["codec"], rows


def _prefix_kv(engine, tokens: list[int]) -> torch.Tensor:
    engine.add_request("__kv_probe__", tokens + [tokens[-1]], PARAMS, prefill_only=True)
    step_until_first(engine, "__kv_probe__")
    kv = engine.read_prefix_kv("__kv_probe__", len(tokens))
    engine.release("__kv_probe__")
    return kv


def suffix_agreement(engine, prompt: list[int], prefix_kv: torch.Tensor) -> dict:
    """How a fetched (maybe lossy) prefix changes the logits of the computed suffix."""
    exact = engine.prompt_logits(prompt)[prefix_kv.shape[2]:]
    reused = engine.prompt_logits(prompt, prefix_kv=prefix_kv)
    return {"top1_agreement": float((exact.argmax(-1) == reused.argmax(-1)).float().mean()),
            "logits_rel_err": float((exact - reused).norm() / exact.norm())}


def bench_model(model: str, codecs: list[str] | None, reps: int, server: RedisServer) -> None:
    """Cold and warm cases interleaved repetition by repetition, so noise hits all alike. Every
    case is the real prefill worker (``PrefillWorker``, in this process): ``cold`` without a
    store, the others with one store client per codec."""
    prompt_len, cached, chunk, factor = SETUPS[model]
    reps *= factor
    engine_cfg = EngineConfig(model=model, enable_prefix_caching=False, seed=0, max_num_seqs=2,
                              max_model_len=prompt_len + 64, device="cpu")
    cold_worker = InProcessPrefill(None, engine_cfg)
    engine = cold_worker.worker.engine
    rng = random.Random(0)
    vocab = engine.model_config.vocab_size
    prompt = [rng.randrange(3, vocab) for _ in range(prompt_len)]
    earlier = prompt[:cached] + [rng.randrange(3, vocab) for _ in range(64)]  # computed before
    warm_up = [ttft_s(cold_worker.prefill(f"warmup{i}", prompt, PARAMS)[0]) for i in range(2)]
    speed = prompt_len / min(warm_up)   # what the prefill worker would have measured
    if codecs is None:
        with PrefixCacheClient.open(StoreConfig(url=server.url, chunk_size=chunk, backend="redis"),
                                    engine.kv_layout) as probe:
            redis_bps = probe.cost.snapshot()["remote"]["bytes_per_s"]
        best, rows = _on_engine(cold_worker, lambda e: pick_lossy(e, prompt, chunk, redis_bps))
        for row in rows:
            emit(model=model, case="codec_probe", figure="lossy_codec", **row)
        codecs = ["raw", best]
    workers: dict[str, InProcessPrefill] = {}
    cases = {"warm_dram": (False, speed), "warm_redis": (True, speed),
             "forced_fetch_redis": (True, 1e-3)}
    times: dict[tuple, list[float]] = {("cold", None): []}
    last: dict[tuple, object] = {}
    try:
        for codec in codecs:
            workers[codec] = worker = InProcessPrefill(StoreConfig(
                url=server.url, chunk_size=chunk, codec=codec, local_cpu_bytes=512 << 20,
                writeback_max_bytes=1 << 30), engine_cfg)
            worker.prefill(f"store-{codec}", earlier, PARAMS, _salt(model, codec), speed)
            worker.client.flush(300)
        for rep in range(reps + 1):               # repetition 0 warms every path up
            cold = ttft_s(cold_worker.prefill(f"cold{rep}", prompt, PARAMS)[0])
            if rep:
                times[("cold", None)].append(cold)
            for codec, worker in workers.items():
                for case, (from_redis, tps) in cases.items():
                    if from_redis:
                        worker.client.store.clear_local()
                    out, _ = worker.prefill(f"{case}-{codec}-{rep}", prompt, PARAMS,
                                            _salt(model, codec), tps)
                    if rep:
                        times.setdefault((case, codec), []).append(ttft_s(out))
                    last[(case, codec)] = out
        cold = statistics.median(times[("cold", None)])
        emit(model=model, case="cold", figure="ttft_s", median=cold, reps=reps,
             prefill_tokens_per_s=speed, prompt_tokens=prompt_len, cached_tokens=cached, chunk=chunk)
        for (case, codec), values in times.items():
            if case == "cold":
                continue
            store = last[(case, codec)].store
            ttft = statistics.median(values)
            emit(model=model, codec=codec, case=case, figure="ttft_s", median=ttft, reps=reps,
                 ratio_vs_cold=ttft / cold, decision=store.decision,
                 fetched_tokens=store.fetched_tokens, hit_dram=store.hit_local,
                 hit_redis=store.hit_remote, est_fetch_s=store.est_fetch_s,
                 est_recompute_s=store.est_recompute_s)
        for codec, worker in workers.items():
            _on_engine(cold_worker, lambda e, c=codec, w=worker: report_codec(
                e, model, c, chunk, prompt, w.client))
    finally:
        for worker in [cold_worker, *workers.values()]:
            worker.close()


def _on_engine(worker: InProcessPrefill, fn):
    """``fn(engine)`` on the worker's engine thread (the engine is single-threaded)."""
    return worker.worker.driver.submit(fn).result()


def _salt(model: str, codec: str) -> str:
    return f"bench-{model}-{codec}"


def report_codec(engine, model, codec, chunk, prompt, client) -> None:
    tier = client.store.tier.snapshot()
    if codec != "raw":
        client.store.clear_local()
        kv = client.store.get(prompt, len(prompt) - 1, _salt(model, codec))
        emit(model=model, codec=codec, case="warm_redis", figure="quality",
             **suffix_agreement(engine, prompt, kv))
    emit(model=model, codec=codec, figure="store",
         wire_bytes_per_token=tier.bytes_put / max(1, tier.chunks_put * chunk),
         raw_bytes_per_token=client.cost.bytes_per_token, cost_model=client.cost.snapshot())


def replay_trace(workers: int = 4, block: int = 512, path: str = TRACE) -> None:
    """Hit rate of one global store vs per-worker caches on the trace's prefix blocks."""
    rows = [json.loads(line) for line in open(path)]
    unique = len({h for r in rows for h in r["hash_ids"]})
    for share in (None, 0.25, 0.05):          # per-worker capacity as a share of all blocks
        cap = None if share is None else max(1, int(unique * share / workers))
        for routing in ("round_robin", "random"):
            rates = {}
            for scope in ("global", "local"):
                rates[scope] = _replay(rows, workers, block, cap, scope == "global", routing)
            emit(case="mooncake_conversation", figure="prefix_hit_rate", workers=workers,
                 routing=routing, per_worker_capacity_blocks=cap, global_capacity_blocks=(
                     None if cap is None else cap * workers),
                 global_store=rates["global"], local_only=rates["local"],
                 ratio=rates["global"] / rates["local"], requests=len(rows), block_tokens=block,
                 note="token-weighted hit rate; block bookkeeping only, scale-invariant in length")


def _replay(rows, workers, block, cap, shared, routing) -> float:
    caches = [OrderedDict() for _ in range(1 if shared else workers)]
    limit = None if cap is None else cap * (workers if shared else 1)
    rng = random.Random(0)
    hit = total = 0
    for i, row in enumerate(rows):
        worker = i % workers if routing == "round_robin" else rng.randrange(workers)
        cache = caches[0 if shared else worker]
        full = row["hash_ids"][:row["input_length"] // block]   # only full blocks are stored
        n = 0
        for h in full:
            if h not in cache:
                break
            cache.move_to_end(h)
            n += 1
        hit += min(n * block, row["input_length"] - 1)
        total += row["input_length"]
        for h in full:
            cache[h] = None
            cache.move_to_end(h)
            if limit is not None and len(cache) > limit:
                cache.popitem(last=False)
    return hit / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="stories260K only, 3 repetitions")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--models", default=",".join(SETUPS))
    parser.add_argument("--codecs", default=None, help="e.g. raw,int8 (default: raw + best lossy)")
    args = parser.parse_args()
    models = ["stories260K"] if args.quick else args.models.split(",")
    reps = 3 if args.quick else args.reps
    codecs = args.codecs.split(",") if args.codecs else None
    emit(figure="machine", cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
         load_avg_1m=os.getloadavg()[0])   # other processes' load makes every figure noisier
    with RedisServer(maxmemory="2gb") as server:
        for model in models:
            bench_model(model, codecs, reps, server)
            emit(figure="machine", after=model, load_avg_1m=os.getloadavg()[0])
    replay_trace()


if __name__ == "__main__":
    main()
