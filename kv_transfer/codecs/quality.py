"""Measure what a lossy codec costs in model quality, the way disaggregation uses it.

Protocol (used by tests/kv_transfer/test_codec_quality.py and benchmarks/kv_codecs.py):
for each story prompt, the raw model first writes ``extend`` greedy tokens so the context
is a realistic ~100+ tokens; a prefill-only request over that context is exported (its
KV, plus the first token t1 the prefill sampled from exact KV). Then, per codec:

* teacher-forced top-1 agreement: logits of the ``continuation`` positions after t1,
  computed from the codec's round-tripped KV vs from the raw KV, given the raw model's own
  greedy continuation as input; the fraction of positions whose argmax agrees;
* greedy agreement: the sequence is imported from the round-tripped KV (as a decode worker
  would) and decodes ``continuation`` tokens greedily; the fraction of positions equal to
  the raw import's tokens (position-wise, so one early divergence costs every later one),
  and the fraction of prompts whose whole continuation is identical.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from kv_transfer.wire import decode_sequence, encode_sequence

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class QualityCase:
    """One prompt, prepared once: its exported raw SequenceKV and the raw references."""
    seq: object                          # engine.kv_export.SequenceKV
    reference_tokens: list[int]          # raw greedy continuation after t1
    reference_top1: torch.Tensor         # raw teacher-forced argmax per position


@dataclass(slots=True)
class QualityReport:
    codec: str
    entropy: str | None
    params: dict
    prompts: int
    teacher_forced_top1: float
    greedy_agreement: float
    greedy_exact: float
    wire_bytes: int
    fp16_bytes: int
    extra: dict = field(default_factory=dict)

    @property
    def ratio_vs_fp16(self) -> float:
        return self.fp16_bytes / self.wire_bytes


def prepare_cases(engine, tokenizer, prompts: Sequence[str], extend: int = 96,
                  continuation: int = 64) -> list[QualityCase]:
    """Build the contexts, export their raw KV and compute the raw references (batched)."""
    from engine import SamplingParams
    greedy = SamplingParams(temperature=0, max_tokens=extend, ignore_eos=True)
    contexts = [ids + out for ids, out in zip(
        (tokenizer.encode(p) for p in prompts),
        _run(engine, [(f"q-ctx-{i}", tokenizer.encode(p), greedy) for i, p in enumerate(prompts)]))]
    cont = SamplingParams(temperature=0, max_tokens=continuation + 1, ignore_eos=True)
    for i, ctx in enumerate(contexts):
        engine.add_request(f"q-pre-{i}", ctx, cont, prefill_only=True)
    seqs = {}
    while len(seqs) < len(contexts):
        engine.step()
        for i in range(len(contexts)):
            rid = f"q-pre-{i}"
            if rid not in seqs and engine.requests[rid].status.value == "parked":
                seqs[rid] = engine.export_kv(rid)
                engine.release(rid)
    ordered = [seqs[f"q-pre-{i}"] for i in range(len(contexts))]
    references = _continue(engine, ordered, "ref")
    cases = []
    for seq, ref in zip(ordered, references):
        top1 = _teacher_forced_top1(engine, seq, seq.kv, ref)
        cases.append(QualityCase(seq, ref, top1))
    return cases


def measure(engine, cases: Sequence[QualityCase], codec: str, codec_params: dict | None = None,
            entropy: str | None = None) -> QualityReport:
    """Round-trip every case's SequenceKV through the wire with ``codec`` and compare."""
    layout = engine.kv_layout
    agree = positions = wire = fp16 = 0
    decoded = []
    for i, case in enumerate(cases):
        blob = encode_sequence(case.seq, layout, codec, codec_params, entropy)
        wire += len(blob)
        fp16 += case.seq.kv.numel() * 2
        back = decode_sequence(blob, layout)
        back.request_id = f"q-{codec}-{i}"
        decoded.append(back)
        top1 = _teacher_forced_top1(engine, case.seq, back.kv, case.reference_tokens)
        agree += int((top1 == case.reference_top1).sum())
        positions += top1.numel()
    outs = _continue(engine, decoded, codec)
    same = sum(sum(a == b for a, b in zip(o, c.reference_tokens)) for o, c in zip(outs, cases))
    total = sum(len(c.reference_tokens) for c in cases)
    exact = sum(o == c.reference_tokens for o, c in zip(outs, cases))
    from kv_transfer.codecs import get_codec
    return QualityReport(codec, entropy, get_codec(codec, **(codec_params or {})).params(), len(cases),
                         agree / positions, same / total, exact / len(cases), wire, fp16)


def prefill_export(engine, ids: list[int], request_id: str, sampling=None):
    """Run ``ids`` as a prefill-only request; its exported ``SequenceKV`` (prompt KV and the
    first sampled token), the request released."""
    from engine import SamplingParams
    params = sampling or SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    engine.add_request(request_id, ids, params, prefill_only=True)
    while engine.requests[request_id].status.value != "parked":
        engine.step()
        if request_id not in engine.requests:
            raise RuntimeError(f"request {request_id} finished before parking (max_tokens=1?)")
    seq = engine.export_kv(request_id)
    engine.release(request_id)
    return seq


def _teacher_forced_top1(engine, seq, kv: torch.Tensor, continuation: list[int]) -> torch.Tensor:
    """argmax at each position after t1 when ``kv`` holds the context and the raw greedy
    continuation is fed in."""
    ids = list(seq.token_ids) + continuation[:-1]          # context + t1 + continuation
    logits = engine.prompt_logits(ids, prefix_kv=kv)
    return logits.argmax(-1)[:len(continuation)]


def _continue(engine, seqs: list, tag: str) -> list[list[int]]:
    """Import each SequenceKV and decode greedily; the tokens after t1, per sequence."""
    import dataclasses
    rids = []
    for i, seq in enumerate(seqs):
        clone = dataclasses.replace(seq, request_id=f"q-{tag}-dec-{i}")
        engine.import_kv(clone)
        rids.append(clone.request_id)
    done = {}
    while len(done) < len(rids):
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.token_ids[1:]
    return [done[r] for r in rids]


def _run(engine, requests: list) -> list[list[int]]:
    for rid, ids, params in requests:
        engine.add_request(rid, ids, params)
    done = {}
    while len(done) < len(requests):
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.token_ids
    return [done[rid] for rid, _, _ in requests]
