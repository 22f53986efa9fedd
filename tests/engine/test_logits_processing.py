"""Penalties and constraints (presence, frequency, repetition, min_tokens, logit_bias) change
greedy output exactly as a reference written here from vLLM's documented rules does, on the
same logits; they reach sampled rows too; bad values are refused."""
from __future__ import annotations

import pytest
import torch

from engine import LLM, SamplingParams

PROMPT = "Once upon a time, there was a little girl named Lily. She loved"


def reference_adjust(logits: list[float], prompt: list[int], output: list[int], p: dict,
                     eos: set[int]) -> list[float]:
    """vLLM's rules, one token at a time, in float64: logit_bias, min_tokens, then the
    repetition, frequency and presence penalties."""
    out = list(logits)
    for tok, bias in p.get("logit_bias", {}).items():
        out[tok] += bias
    if len(output) < p.get("min_tokens", 0):
        for tok in set(p.get("stop_token_ids", [])) | eos:
            out[tok] = float("-inf")
    rp = p.get("repetition_penalty", 1.0)
    for tok in set(prompt) | set(output):
        out[tok] = out[tok] / rp if out[tok] > 0 else out[tok] * rp
    for tok in set(output):
        out[tok] -= p.get("frequency_penalty", 0.0) * output.count(tok) + p.get("presence_penalty", 0.0)
    return out


def reference_greedy(llm: LLM, prompt: list[int], p: dict, n: int) -> list[int]:
    """Greedy decoding by teacher forcing: each next token from the whole sequence's logits."""
    eos = set(llm.engine.eos_token_ids)
    output: list[int] = []
    for _ in range(n):
        logits = llm.engine.prompt_logits(prompt + output)[-1].double().tolist()
        adjusted = reference_adjust(logits, prompt, output, p, eos)
        output.append(max(range(len(adjusted)), key=adjusted.__getitem__))
    return output


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM("stories260K")


@pytest.mark.parametrize("params", [
    {"repetition_penalty": 1.3},
    {"repetition_penalty": 0.8},
    {"frequency_penalty": 1.5},
    {"presence_penalty": 1.2},
    {"presence_penalty": -0.5, "frequency_penalty": 1.2},
    {"logit_bias": {267: -100.0, 3: 8.0}},
    {"repetition_penalty": 1.2, "frequency_penalty": 0.5, "logit_bias": {7: 2.5}},
], ids=lambda p: ",".join(p))
def test_each_penalty_changes_greedy_output_exactly_as_the_reference(llm, params):
    prompt = llm.tokenizer.encode(PROMPT)
    n = 24
    got = llm.generate([prompt], SamplingParams(max_tokens=n, temperature=0, ignore_eos=True, **params))[0]
    plain = llm.generate([prompt], SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))[0]
    assert got.token_ids == reference_greedy(llm, prompt, params, n)
    assert got.token_ids != plain.token_ids      # the penalty did something here


def test_min_tokens_holds_back_eos_stop_tokens_and_stop_strings(llm):
    prompt = llm.tokenizer.encode(PROMPT)
    eos = min(llm.engine.eos_token_ids)
    push_eos = {"logit_bias": {eos: 100.0}}
    first = llm.generate([prompt], SamplingParams(max_tokens=20, temperature=0, **push_eos))[0]
    assert first.token_ids == [eos] and first.finish_reason == "stop"
    held = llm.generate([prompt], SamplingParams(max_tokens=20, temperature=0, min_tokens=5, **push_eos))[0]
    assert len(held.token_ids) == 6 and held.token_ids[-1] == eos and eos not in held.token_ids[:5]
    assert held.token_ids == reference_greedy(llm, prompt, {"min_tokens": 5, **push_eos}, 6)
    # A stop string inside the first min_tokens tokens does not end the request.
    plain = llm.generate([prompt], SamplingParams(max_tokens=12, temperature=0))[0]
    stop = plain.text[2:6]
    early = llm.generate([prompt], SamplingParams(max_tokens=12, temperature=0, stop=[stop]))[0]
    late = llm.generate([prompt], SamplingParams(max_tokens=12, temperature=0, stop=[stop], min_tokens=12))[0]
    assert early.finish_reason == "stop" and len(early.token_ids) < 12
    assert late.token_ids == plain.token_ids and late.finish_reason == "length"


def test_penalties_reach_sampled_rows_and_leave_their_batch_mates_alone(llm):
    prompt = llm.tokenizer.encode(PROMPT)
    forced = SamplingParams(max_tokens=8, temperature=1.0, seed=5, logit_bias={42: 100.0})
    free = SamplingParams(max_tokens=8, temperature=1.0, seed=5)
    both = llm.generate([prompt, prompt], [forced, free])
    alone = llm.generate([prompt], free)[0]
    assert both[0].token_ids == [42] * 8
    assert both[1].token_ids == alone.token_ids


@pytest.mark.parametrize("bad", [
    {"presence_penalty": 2.5}, {"frequency_penalty": -3.0}, {"repetition_penalty": 0.0},
    {"repetition_penalty": float("inf")}, {"min_tokens": -1}, {"min_tokens": 17, "max_tokens": 16},
    {"logit_bias": {1: 101.0}}, {"logit_bias": {-1: 1.0}}, {"logit_bias": [1, 2]},
])
def test_out_of_range_penalties_are_refused(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_a_logit_bias_outside_the_vocabulary_is_refused_before_any_step(llm):
    vocab = llm.engine.model_config.vocab_size
    with pytest.raises(ValueError, match="logit_bias"):
        llm.engine.add_request("bad-bias", [1, 2, 3], SamplingParams(logit_bias={vocab: 1.0}))
    assert not llm.engine.has_unfinished()


def test_an_exported_sequence_keeps_its_penalties_across_the_hand_off(llm):
    """Prefill on one engine, decode on another (the disaggregated path): the same tokens as
    one engine, penalties included."""
    from engine import LLMEngine
    prompt = llm.tokenizer.encode(PROMPT)
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, repetition_penalty=1.4,
                            frequency_penalty=0.6)
    whole = llm.generate([prompt], params)[0].token_ids
    prefill = llm.engine
    prefill.add_request("handoff", prompt, params, prefill_only=True)
    while prefill.has_unfinished():
        prefill.step()
    seq_kv = prefill.export_kv("handoff")
    decode = LLMEngine(llm.engine.config, loaded=llm.engine.loaded)
    decode.import_kv(seq_kv)
    out = None
    while decode.has_unfinished():
        for o in decode.step():
            out = o
    assert out.token_ids == whole
    assert torch.equal(torch.tensor(out.token_ids), torch.tensor(whole))
