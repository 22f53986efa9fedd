"""Offline generation timing for benchmarks/vs_vllm.py, one system per process.

    python _vs_vllm_offline.py --system vllm|tandem --model DIR --prompts FILE \
        --max-tokens N --batches 1,32

Runs under the peer venv's python for ``vllm`` (``vllm.LLM.generate``) and under the project
venv's python for ``tandem`` (``engine.LLM.generate``); it imports nothing else from the
project, so the same file serves both. Both get the same prompts as token ids (no
re-tokenization), greedy sampling, ``ignore_eos`` and one compute thread. The caller sets the
thread environment (``OMP_NUM_THREADS``, ``VLLM_CPU_OMP_THREADS_BIND``).

At batch B the first B prompts are generated in one ``generate`` call; at batch 1 the first
``--batch1-prompts`` prompts are generated one call each. Output tokens/s = generated
tokens / wall time of the calls (prefill included). One warm-up call runs first. Then
``--prefill-prompts`` prompts one call each with one output token: ``prefill_ms``, the
median wall time of one prompt's prefill (the engine's part of TTFT). Prints one
JSON object on the last line of stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def make_generate(system: str, model: str, max_batch: int):
    """A function ``gen(list_of_token_id_lists, max_tokens) -> generated token count``."""
    if system == "vllm":
        from vllm import LLM, SamplingParams

        llm = LLM(model=model, dtype="float32", max_model_len=2048, seed=0,
                  max_num_seqs=max(max_batch, 1))

        def gen(prompts: list[list[int]], max_tokens: int) -> int:
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
            return sum(len(o.outputs[0].token_ids) for o in outs)
        return gen

    import torch
    torch.set_num_threads(1)
    from engine import LLM, SamplingParams

    llm = LLM(model=model, dtype="float32", max_model_len=2048, num_threads=1,
              max_num_seqs=max(max_batch, 32))

    def gen(prompts: list[list[int]], max_tokens: int) -> int:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        outs = llm.generate(prompts, params)
        return sum(len(o.token_ids) for o in outs)
    return gen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", choices=["vllm", "tandem"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="JSON file: a list of token id lists")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--batch1-prompts", type=int, default=4)
    ap.add_argument("--prefill-prompts", type=int, default=8)
    args = ap.parse_args()
    prompts: list[list[int]] = json.load(open(args.prompts))
    batches = [int(b) for b in args.batches.split(",")]
    if max(batches) > len(prompts):
        sys.exit(f"need {max(batches)} prompts, got {len(prompts)}")
    t0 = time.perf_counter()
    gen = make_generate(args.system, args.model, max(batches))
    load_s = time.perf_counter() - t0
    gen(prompts[:2], args.max_tokens)             # warm-up (not timed)
    result = {"system": args.system, "load_s": load_s, "max_tokens": args.max_tokens,
              "prompt_lens": sorted({len(p) for p in prompts})}
    for b in batches:
        groups = ([[p] for p in prompts[:args.batch1_prompts]] if b == 1 else [prompts[:b]])
        tokens, t0 = 0, time.perf_counter()
        for g in groups:
            tokens += gen(g, args.max_tokens)
        wall = time.perf_counter() - t0
        result[f"batch{b}"] = {"tokens": tokens, "wall_s": wall, "out_tok_s": tokens / wall,
                               "requests": sum(len(g) for g in groups)}
    walls = []
    for p in prompts[:args.prefill_prompts]:     # one prompt, one token: the engine's prefill
        fresh = p[::-1]                           # shares no prefix with what ran: no cache hit
        t0 = time.perf_counter()
        gen([fresh], 1)
        walls.append(time.perf_counter() - t0)
    result["prefill_ms"] = 1000 * sorted(walls)[len(walls) // 2]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
