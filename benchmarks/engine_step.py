"""The engine step with the native CPU kernels against the torch path, same run.

    .venv/bin/python -m benchmarks.engine_step [--reps 5] [--prompt 512] [--batches 1,32]

Model: the "llama-20m" preset (the vs_vllm model), one torch thread. Three engines live in
one process: ``native`` (the defaults: native decode attention and elementwise kernels),
``torch`` (the same engine with every native kernel switched off: gather + SDPA decode
attention, SDPA prefill attention, eager RMSNorm/SiLU/RoPE) and ``bf16`` (native kernels plus
``matmul_dtype=bfloat16``, only on CPUs with AMX). Figures are thread CPU time, so time
slices lost to other processes on a shared machine do not count; repetitions interleave the
engines. JSON lines: the median decode step at each batch (prompts of ``--prompt`` tokens,
20 steps after the prefill) and the median prefill of one prompt, with ratios to ``torch``.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from engine import LLM, SamplingParams
from engine.matmul import cpu_has_amx_bf16
from engine.model import DecoderLayer, RMSNorm

BENCH = "engine_step"
MODEL = "llama-20m"


def emit(**fields) -> None:
    print(json.dumps({"bench": BENCH, **fields}), flush=True)


def torch_only(llm: LLM) -> LLM:
    llm.engine.runner.native_decode = llm.engine.runner.native_prefill = False
    for module in llm.engine.runner.model.modules():
        if isinstance(module, (RMSNorm, DecoderLayer)):
            module.native = False
    return llm


def prompts(n: int, length: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 512) for _ in range(length)] for _ in range(n)]


def decode_step_ms(llm: LLM, batch: int, length: int, seed: int, steps: int = 20) -> float:
    eng = llm.engine
    params = SamplingParams(max_tokens=steps + 8, ignore_eos=True, temperature=0.0)
    for i, p in enumerate(prompts(batch, length, seed)):
        eng.add_request(f"b{seed}-{i}", p, params)
    while any(s.num_output_tokens == 0 for s in eng.requests.values()):
        eng.step()
    times = []
    for _ in range(steps):
        t0 = time.thread_time()
        eng.step()
        times.append(time.thread_time() - t0)
    for rid in list(eng.requests):
        eng.abort(rid)
    return statistics.median(times) * 1e3


def prefill_ms(llm: LLM, length: int, seed: int) -> float:
    eng = llm.engine
    eng.add_request(f"p{seed}", prompts(1, length, seed)[0],
                    SamplingParams(max_tokens=1, ignore_eos=True, temperature=0.0))
    t0 = time.thread_time()
    while eng.has_unfinished():
        eng.step()
    return (time.thread_time() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--batches", default="1,32")
    args = ap.parse_args()
    torch.set_num_threads(1)
    engines = {"native": LLM(MODEL, num_threads=1, enable_prefix_caching=False),
               "torch": torch_only(LLM(MODEL, num_threads=1, enable_prefix_caching=False))}
    if cpu_has_amx_bf16():
        engines["bf16"] = LLM(MODEL, num_threads=1, enable_prefix_caching=False, matmul_dtype="bfloat16")
    batches = [int(b) for b in args.batches.split(",")]
    decode: dict[tuple[str, int], list[float]] = {}
    prefill: dict[str, list[float]] = {}
    for name, llm in engines.items():                 # warm-up: first calls allocate
        decode_step_ms(llm, 1, 16, seed=0, steps=2)
        prefill_ms(llm, 64, seed=0)
    for rep in range(args.reps):
        for name, llm in engines.items():
            for b in batches:
                decode.setdefault((name, b), []).append(decode_step_ms(llm, b, args.prompt, seed=rep + 1))
            prefill.setdefault(name, []).append(prefill_ms(llm, args.prompt, seed=rep + 1))
    for b in batches:
        base = statistics.median(decode[("torch", b)])
        for name in engines:
            med = statistics.median(decode[(name, b)])
            emit(figure="decode_step_ms", engine=name, batch=b, context=args.prompt, reps=args.reps,
                 cpu_ms=round(med, 2), vs_torch=round(med / base, 3),
                 all=[round(v, 2) for v in decode[(name, b)]])
    base = statistics.median(prefill["torch"])
    for name in engines:
        med = statistics.median(prefill[name])
        emit(figure="prefill_ms", engine=name, prompt_tokens=args.prompt, reps=args.reps,
             cpu_ms=round(med, 1), vs_torch=round(med / base, 3), all=[round(v, 1) for v in prefill[name]])


if __name__ == "__main__":
    main()
