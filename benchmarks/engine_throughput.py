"""Engine throughput against HF transformers ``generate`` on the same model, same run.

    .venv/bin/python -m benchmarks.engine_throughput [--quick] [--threads 1,2] [--reps R] [--profile]

Model: the random-weight "llama-100m" preset (~100M parameters, float32). The HF baseline
is a ``LlamaForCausalLM`` built from ``ModelConfig.to_hf()`` holding a copy of the engine's
weights (``benchmarks.hf_reference``); both run with the same torch thread count and the
same prompts, alternating repetition by repetition so machine noise hits both alike. Every
figure is measured at each thread count given (default: 1 and all cores): on a shared
2-core machine one thread is often faster, because every parallel region of a small op
waits for a core that another process holds.

Figures (one JSON line each, medians over repetitions):
- decode tokens/s at batch 1, 8, 32 (prompt 64 tokens; tokens after the first). HF's decode
  time is generate(N) - generate(1); the engine's is the time of its decode steps.
- prefill tokens/s at 512 and 2,048 tokens (time to first token, one request).
- the memory read bandwidth of this machine (streaming sum over 1 GiB), and batch-1 decode
  as a fraction of the bandwidth roofline: bandwidth / bytes of weights read per token
  (``fraction``: against the best bandwidth of the run; ``paired_fraction``: the median,
  rep by rep, against a bandwidth measured just before; ``cpu_time_fraction``: the same
  with both measured in this process's CPU time, which discounts time slices lost to
  other processes on a shared machine).
``--profile`` prints where batch-1 decode time goes (torch.profiler) to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

import torch

from benchmarks.hf_reference import hf_model_from_engine
from engine import LLM, SamplingParams

ROOFLINE_TARGET = 0.7   # issue 13: batch-1 decode >= 0.7 of the bandwidth roofline (paired)

BENCH = "engine_throughput"
MODEL = "llama-100m"
PROMPT_LEN = 64
BLOCK = 16


def emit(**fields) -> None:
    print(json.dumps({"bench": BENCH, **fields}), flush=True)


def median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def memory_bandwidth(thread_counts: list[int], reps: int) -> dict[int, float]:
    """Streaming read bandwidth (GB/s) of a 1 GiB float32 buffer at each thread count."""
    buf = torch.ones(1 << 28)            # touched, so every page is really in memory
    nbytes = buf.numel() * buf.element_size()
    out = {}
    for n in thread_counts:
        torch.set_num_threads(n)
        out[n] = nbytes / median_time(buf.sum, reps) / 1e9
    del buf
    return out


def paired_roofline_fractions(llm: LLM, per_token: int, reps: int,
                              new_tokens: int) -> tuple[list[float], list[float]]:
    """Batch-1 decode over the roofline of a bandwidth measured just before it, rep by rep,
    once by wall clock and once by this process's CPU time. On a shared machine both runs
    suffer the same neighbours, so these ratios are steadier than the wall-clock figures."""
    buf = torch.ones(1 << 27)            # 512 MiB
    nbytes = buf.numel() * buf.element_size()
    vocab = llm.engine.model_config.vocab_size
    wall, cpu = [], []
    for rep in range(reps):
        buf.sum()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(3):
            buf.sum()
        bw_wall = 3 * nbytes / (time.perf_counter() - w0)
        bw_cpu = 3 * nbytes / max(time.process_time() - c0, 1e-9)
        prompt = random_prompts(random.Random(555 + rep), 1, PROMPT_LEN, vocab)
        tok_wall, tok_cpu = engine_decode_timed(llm, prompt, new_tokens)
        wall.append(tok_wall * per_token / bw_wall)
        cpu.append(tok_cpu * per_token / bw_cpu)
    return wall, cpu


def weight_bytes_per_token(llm: LLM) -> int:
    """Bytes a batch-1 decode step must read: every matrix once; the input embedding is one
    row (negligible) unless it doubles as the tied output head."""
    model = llm.engine.loaded.model
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if not model.cfg.tie_word_embeddings:
        total -= model.embed.weight.numel() * model.embed.weight.element_size()
    return total


def kv_bytes_per_token(llm: LLM, context: int) -> int:
    lay = llm.engine.kv_layout
    return lay.num_layers * 2 * context * lay.num_kv_heads * lay.head_dim * 4


def random_prompts(rng: random.Random, n: int, length: int, vocab: int) -> list[list[int]]:
    return [[1] + [rng.randrange(3, vocab) for _ in range(length - 1)] for _ in range(n)]


# -- the engine ----------------------------------------------------------------------------
def engine_decode(llm: LLM, prompts: list[list[int]], new_tokens: int) -> float:
    """Decode tokens/s: every sequence's tokens after its first, over the decode steps' time."""
    return engine_decode_timed(llm, prompts, new_tokens)[0]


def engine_decode_timed(llm: LLM, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """Decode tokens per wall-clock second and per CPU second of this process."""
    eng = llm.engine
    sp = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    ids = [f"d{time.monotonic_ns()}-{i}" for i in range(len(prompts))]
    for rid, p in zip(ids, prompts):
        eng.add_request(rid, p, sp)
    started: set[str] = set()
    while len(started) < len(ids):                  # prefill: every sequence has its first token
        started |= {o.request_id for o in eng.step()}
    t0, c0 = time.perf_counter(), time.process_time()
    while eng.has_unfinished():
        eng.step()
    tokens = len(prompts) * (new_tokens - 1)
    return tokens / (time.perf_counter() - t0), tokens / max(time.process_time() - c0, 1e-9)


def engine_prefill(llm: LLM, prompt: list[int]) -> float:
    eng = llm.engine
    rid = f"p{time.monotonic_ns()}"
    t0 = time.perf_counter()
    eng.add_request(rid, prompt, SamplingParams(temperature=0.0, max_tokens=1))
    while eng.has_unfinished():
        eng.step()
    return len(prompt) / (time.perf_counter() - t0)


# -- the HF baseline -----------------------------------------------------------------------
def hf_generate_seconds(hf, prompts: list[list[int]], new_tokens: int) -> float:
    ids = torch.tensor(prompts)
    t0 = time.perf_counter()
    with torch.inference_mode():
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return time.perf_counter() - t0


def hf_decode(hf, prompts: list[list[int]], new_tokens: int) -> float:
    full = hf_generate_seconds(hf, prompts, new_tokens)
    first = hf_generate_seconds(hf, prompts, 1)
    return len(prompts) * (new_tokens - 1) / max(full - first, 1e-9)


def hf_prefill(hf, prompt: list[int]) -> float:
    return len(prompt) / hf_generate_seconds(hf, [prompt], 1)


# -- figures -------------------------------------------------------------------------------
def compare(figure: str, reps: int, engine_fn, hf_fn, **fields) -> tuple[float, float]:
    """Alternate engine and HF ``reps`` times (after one warm-up each); emit the medians."""
    engine_fn(0), hf_fn(0)
    ours, theirs = [], []
    for rep in range(1, reps + 1):
        ours.append(engine_fn(rep))
        theirs.append(hf_fn(rep))
    e, h = statistics.median(ours), statistics.median(theirs)
    emit(figure=figure, **fields, engine_tok_s=round(e, 1), hf_tok_s=round(h, 1),
         ratio=round(e / h, 2), reps=reps, engine_all=[round(x, 1) for x in ours],
         hf_all=[round(x, 1) for x in theirs])
    return e, h


def profile_decode(llm: LLM, vocab: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    eng = llm.engine
    eng.add_request("prof", random_prompts(random.Random(9), 1, PROMPT_LEN, vocab)[0],
                    SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True))
    for _ in range(5):
        eng.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            eng.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
    eng.abort("prof")


def run_at(threads: int, llm: LLM, hf, args, machine_bw: float) -> None:
    """Every figure at one thread count."""
    torch.set_num_threads(threads)
    reps = args.reps or (1 if args.quick else 3)
    new_tokens = 16 if args.quick else 64
    vocab = llm.engine.model_config.vocab_size
    load_before = os.getloadavg()[0]
    decode = {}
    for batch in (1, 8, 32):
        def prompts(rep, b=batch):
            return random_prompts(random.Random(1000 * b + rep), b, PROMPT_LEN, vocab)
        decode[batch] = compare("decode", reps, lambda rep: engine_decode(llm, prompts(rep), new_tokens),
                                lambda rep: hf_decode(hf, prompts(rep), new_tokens),
                                threads=threads, batch=batch)
    for length in args.prefill_lens:
        def prompt(rep, n=length):
            return random_prompts(random.Random(7 * n + rep), 1, n, vocab)[0]
        compare("prefill", reps, lambda rep: engine_prefill(llm, prompt(rep)),
                lambda rep: hf_prefill(hf, prompt(rep)), threads=threads, prompt_tokens=length)

    per_token = weight_bytes_per_token(llm) + kv_bytes_per_token(llm, PROMPT_LEN + new_tokens // 2)
    roofline = machine_bw * 1e9 / per_token
    b1 = decode[1][0]
    paired, per_cpu = paired_roofline_fractions(llm, per_token, max(reps, 5), new_tokens)
    emit(figure="batch1_roofline", threads=threads, bytes_per_token_mb=round(per_token / 1e6, 1),
         bandwidth_gb_s=round(machine_bw, 1), roofline_tok_s=round(roofline, 1),
         engine_tok_s=round(b1, 1), fraction=round(b1 / roofline, 3),
         paired_fraction=round(statistics.median(paired), 3),
         cpu_time_fraction=round(statistics.median(per_cpu), 3),
         paired_all=[round(f, 3) for f in paired], target=ROOFLINE_TARGET,
         met=statistics.median(paired) >= ROOFLINE_TARGET)
    ratio = decode[32][0] / decode[1][1]
    emit(figure="batch32_vs_hf_batch1", threads=threads, engine_batch32_tok_s=round(decode[32][0], 1),
         hf_batch1_tok_s=round(decode[1][1], 1), ratio=round(ratio, 2), target=5.0, met=ratio >= 5.0)
    emit(figure="load", threads=threads, load_avg_1m_before=round(load_before, 2),
         load_avg_1m_after=round(os.getloadavg()[0], 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repetitions")
    parser.add_argument("--threads", default=None,
                        help="comma-separated torch thread counts (default: 1 and all cores)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 3)")
    parser.add_argument("--profile", action="store_true", help="profile batch-1 decode to stderr")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    thread_counts = ([int(t) for t in args.threads.split(",")] if args.threads
                     else sorted({1, torch.get_num_threads()}))
    if any(t < 1 for t in thread_counts):
        parser.error("--threads must be positive")
    args.prefill_lens = (512,) if args.quick else (512, 2048)

    bandwidth = memory_bandwidth(sorted(set(thread_counts) | {1}), reps=5)
    machine_bw = max(bandwidth.values())
    emit(figure="memory_bandwidth", read_gb_s={str(k): round(v, 1) for k, v in bandwidth.items()},
         bandwidth_gb_s=round(machine_bw, 1))

    max_len = max(args.prefill_lens) + 64
    new_tokens = 16 if args.quick else 64
    llm = LLM(MODEL, dtype="float32", max_num_seqs=32, max_model_len=max_len,
              num_kv_blocks=32 * -(-(PROMPT_LEN + new_tokens) // BLOCK) + -(-max_len // BLOCK) + 8,
              max_num_batched_tokens=max(2048, max(args.prefill_lens)), seed=0)
    hf = hf_model_from_engine(llm.engine.loaded.model, attn_implementation="sdpa")
    cfg = llm.engine.model_config
    import transformers
    emit(figure="setup", model=MODEL, params_m=round(cfg.num_params / 1e6, 1), dtype="float32",
         thread_counts=thread_counts, cpus=cores, torch=torch.__version__,
         transformers=transformers.__version__, hf_attention="sdpa",
         engine_matmul=llm.engine.loaded.model.matmul.mode,
         prompt_len=PROMPT_LEN, new_tokens=new_tokens, machine=platform.machine())
    for threads in thread_counts:
        run_at(threads, llm, hf, args, machine_bw)
    if args.profile:
        torch.set_num_threads(thread_counts[0])
        profile_decode(llm, cfg.vocab_size)


if __name__ == "__main__":
    main()
