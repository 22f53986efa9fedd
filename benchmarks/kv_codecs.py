"""KV codecs: size, speed and quality, and where compression pays for a transfer.

    .venv/bin/python -m benchmarks.kv_codecs [--quick] [--reps R] [--lengths 512,2048]

One run, one machine. KV comes from a real prefill of the random-weight ``llama-100m``
(12 layers, 4 KV heads, head dim 64) over 512- and 2,048-token prompts, cast to fp16 (the
input the figures are quoted against). Per codec configuration:

* ``codec``: compression ratio vs fp16 (whole wire blob, headers included), encode and
  decode throughput in GB/s of fp16 input on ONE core (``torch.set_num_threads(1)``,
  bytes per CPU-second; wall-clock figures beside them), medians over ``--reps``;
* ``quality``: teacher-forced top-1 and greedy 64-token agreement on stories260K, 50 story
  prompts (protocol in kv_transfer/codecs/quality.py), plus the ratio on that model's KV;
* ``transfer``: encode + move + decode time under simulated 1, 10 and 100 Gbit/s links,
  against ``raw`` in the same run (``speedup_vs_raw``), serial and with layer-wise
  pipelining (estimate: the slowest stage plus one section's worth of the others).

Last, a ``targets`` line checks the issue's targets against what was measured.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from engine import LLM
from kv_transfer.codecs.quality import measure, prefill_export, prepare_cases
from kv_transfer.wire import decode_kv, encode_kv

BENCH = "kv_codecs"
CONFIGS = [  # (label, codec, params, entropy)
    ("raw", "raw", None, None),
    ("raw+zstd", "raw", None, "zstd"),
    ("raw+lz4", "raw", None, "lz4"),
    ("int8", "int8", None, None),
    ("int8+zstd", "int8", None, "zstd"),
    ("kivi4", "kivi4", None, None),
    ("kivi4+zstd", "kivi4", None, "zstd"),
    ("kivi2", "kivi2", None, None),
    ("ecq", "ecq", None, None),
    ("ecq-hq", "ecq-hq", None, None),
    ("ecq-lo", "ecq-lo", None, None),
]
LINKS_GBIT = (1, 10, 100)


def emit(**fields) -> None:
    print(json.dumps({"bench": BENCH, **fields}), flush=True)


def prompt_kv(llm: LLM, tokens: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, llm.engine.model_config.vocab_size, (tokens + 1,), generator=g).tolist()
    return prefill_export(llm.engine, ids, f"bench-{tokens}").kv


def story_prompts() -> list[str]:
    """The 50 story openings of the quality tests."""
    text = (Path(__file__).resolve().parents[1] / "tests/kv_transfer/story_prompts.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def time_codec(kv: torch.Tensor, layout, codec: str, params, entropy, reps: int) -> dict:
    """Sizes, and per-core throughput from CPU time (``time.process_time``: with one torch
    thread it is the time on the core, robust to other processes sharing the machine),
    with the wall-clock figures beside it."""
    blob = encode_kv(kv, layout, codec, params, entropy)
    decode_kv(blob, layout)
    cpu_enc, cpu_dec, wall_enc, wall_dec = [], [], [], []
    for _ in range(reps):
        c0, w0 = time.process_time(), time.perf_counter()
        encode_kv(kv, layout, codec, params, entropy)
        c1, w1 = time.process_time(), time.perf_counter()
        decode_kv(blob, layout)
        c2, w2 = time.process_time(), time.perf_counter()
        cpu_enc.append(c1 - c0)
        cpu_dec.append(c2 - c1)
        wall_enc.append(w1 - w0)
        wall_dec.append(w2 - w1)
    fp16 = kv.numel() * 2
    enc, dec = statistics.median(cpu_enc), statistics.median(cpu_dec)
    return {"fp16_bytes": fp16, "wire_bytes": len(blob), "ratio_vs_fp16": round(fp16 / len(blob), 3),
            "encode_s": enc, "decode_s": dec,
            "encode_gbps": round(fp16 / enc / 1e9, 3), "decode_gbps": round(fp16 / dec / 1e9, 3),
            "encode_decode_gbps": round(fp16 / (enc + dec) / 1e9, 3),
            "wall_encode_gbps": round(fp16 / statistics.median(wall_enc) / 1e9, 3),
            "wall_decode_gbps": round(fp16 / statistics.median(wall_dec) / 1e9, 3)}


def transfer_times(fig: dict, link_gbit: float, sections: int) -> tuple[float, float]:
    """(serial, pipelined) seconds to encode, move over the link and decode."""
    link = fig["wire_bytes"] * 8 / (link_gbit * 1e9)
    stages = (fig["encode_s"], link, fig["decode_s"])
    serial = sum(stages)
    return serial, max(stages) + (serial - max(stages)) / sections


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 512 tokens, 20 prompts")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--lengths", default="512,2048")
    args = ap.parse_args(argv)
    reps = 2 if args.quick else args.reps
    lengths = [512] if args.quick else [int(x) for x in args.lengths.split(",")]

    torch.set_num_threads(2)            # the prefills; codec timing below is per core
    llm = LLM("llama-100m", max_num_seqs=2)
    layout = replace(llm.engine.kv_layout, dtype="float16")
    kvs = {n: prompt_kv(llm, n, seed=n).to(torch.float16) for n in lengths}
    del llm
    emit(kind="setup", model="llama-100m", layout=str(layout), lengths=lengths, reps=reps,
         input_dtype="float16", threads_for_codecs=1)

    torch.set_num_threads(1)
    figures: dict[tuple[str, int], dict] = {}
    for label, codec, params, entropy in CONFIGS:
        for n, kv in kvs.items():
            fig = time_codec(kv, layout, codec, params, entropy, reps)
            figures[(label, n)] = fig
            emit(kind="codec", codec=label, tokens=n, **{k: v for k, v in fig.items() if not k.endswith("_s")})

    for (label, n), fig in figures.items():
        base = figures[("raw", n)]
        for link in LINKS_GBIT:
            serial, piped = transfer_times(fig, link, layout.num_layers)
            raw_serial, raw_piped = transfer_times(base, link, layout.num_layers)
            emit(kind="transfer", codec=label, tokens=n, link_gbit=link,
                 serial_ms=round(serial * 1e3, 3), pipelined_ms=round(piped * 1e3, 3),
                 speedup_vs_raw=round(raw_serial / serial, 3),
                 pipelined_speedup_vs_raw=round(raw_piped / piped, 3))

    stories = LLM("stories260K", max_num_seqs=64, num_threads=1)    # tiny model: 1 thread is fastest
    prompts = story_prompts()[:20] if args.quick else story_prompts()
    cases = prepare_cases(stories.engine, stories.tokenizer, prompts)
    quality = {}
    for label, codec, params, entropy in CONFIGS:
        r = measure(stories.engine, cases, codec, params, entropy)
        quality[label] = r
        emit(kind="quality", codec=label, model="stories260K", prompts=r.prompts, params=r.params,
             teacher_forced_top1=round(r.teacher_forced_top1, 4), greedy_agreement=round(r.greedy_agreement, 4),
             greedy_exact=round(r.greedy_exact, 3), ratio_vs_fp16=round(r.ratio_vs_fp16, 3))

    n = max(lengths)
    best = max((lab for lab in quality if quality[lab].teacher_forced_top1 >= 0.99),
               key=lambda lab: figures[(lab, n)]["ratio_vs_fp16"])
    emit(kind="targets", tokens=n,
         smallest_codec_at_99pct_tf=best, its_ratio_vs_fp16=figures[(best, n)]["ratio_vs_fp16"],
         its_ratio_on_stories=round(quality[best].ratio_vs_fp16, 3),
         max_ratio_any_codec=max(figures[(lab, n)]["ratio_vs_fp16"] for lab in quality),
         int8_encode_decode_gbps=figures[("int8", n)]["encode_decode_gbps"],
         kivi4_encode_decode_gbps=figures[("kivi4", n)]["encode_decode_gbps"],
         target_ratio=5.0, target_tf=0.99, target_gbps_per_core=1.0)


if __name__ == "__main__":
    main()
