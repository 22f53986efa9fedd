"""The export/import boundary: a sequence moved between engines decodes exactly as in place."""
from __future__ import annotations

import pytest

from engine import LLM, SamplingParams, SequenceKV
from engine.errors import UnknownRequestError

from engine_helpers import assert_fp32_close, greedy, run_to_completion

PROMPT_TEXT = "Once upon a time, there was a little girl named Lily. She loved to play outside"


def _prefill_and_export(llm: LLM, rid: str, prompt: list[int], sp: SamplingParams) -> SequenceKV:
    eng = llm.engine
    start = eng.free_block_count()
    eng.add_request(rid, prompt, sp, prefill_only=True)
    firsts = [o for _ in range(100) for o in eng.step() if o.request_id == rid]
    assert len(firsts) == 1 and firsts[0].finish_reason is None and len(firsts[0].token_ids) == 1
    seq_kv = eng.export_kv(rid)
    eng.release(rid)
    assert eng.free_block_count() == start
    return seq_kv


@pytest.mark.parametrize("sp", [greedy(40), SamplingParams(temperature=0.8, top_p=0.9, seed=7, max_tokens=40),
                                SamplingParams(temperature=1.0, max_tokens=40)],
                         ids=["greedy", "seeded", "unseeded"])
def test_export_import_decode_equals_decoding_in_place(sp):
    in_place = LLM("stories260K", seed=5)
    prompt = in_place.tokenizer.encode(PROMPT_TEXT)
    want = in_place.generate([prompt], sp)[0]

    prefill = LLM("stories260K", seed=5)
    seq_kv = _prefill_and_export(prefill, "offline-0", prompt, sp)
    assert seq_kv.kv.shape == (5, 2, len(prompt), 4, 8)
    assert seq_kv.token_ids[:len(prompt)] == prompt and seq_kv.prompt_len == len(prompt)

    decode = LLM("stories260K", block_size=4)            # paging differs; the result must not
    decode.engine.import_kv(seq_kv)
    got = run_to_completion(decode.engine)["offline-0"]
    assert got.token_ids == want.token_ids
    assert got.text == want.text
    assert got.finish_reason == want.finish_reason == "length"


def test_exported_kv_equals_the_kv_of_a_full_prefill():
    a, b = LLM("stories260K"), LLM("stories260K", max_num_batched_tokens=5)
    prompt = a.tokenizer.encode(PROMPT_TEXT)
    kv_a = _prefill_and_export(a, "x", prompt, greedy(3)).kv
    kv_b = _prefill_and_export(b, "x", prompt, greedy(3)).kv
    assert_fp32_close(kv_a, kv_b)


def test_kv_layout_describes_the_exported_tensor(stories):
    layout = stories.engine.kv_layout
    assert (layout.num_layers, layout.num_kv_heads, layout.head_dim, layout.dtype) == (5, 4, 8, "float32")
    assert layout.model_fingerprint == LLM("stories260K").engine.kv_layout.model_fingerprint
    assert layout.model_fingerprint != LLM("tiny-llama-gqa").engine.kv_layout.model_fingerprint


def test_cached_prefix_kv_is_used_and_gives_the_same_output():
    llm = LLM("stories260K", enable_prefix_caching=False)
    prompt = llm.tokenizer.encode(PROMPT_TEXT)
    want = llm.generate([prompt], greedy(20))[0]
    prefix = _prefill_and_export(llm, "src", prompt, greedy(3)).kv[:, :, :16]
    llm.engine.add_request("with-prefix", prompt, greedy(20), cached_prefix_kv=prefix)
    got = run_to_completion(llm.engine)["with-prefix"]
    assert got.token_ids == want.token_ids
    assert got.num_cached_tokens == 16


def test_import_rejects_kv_of_the_wrong_shape(stories):
    prompt = stories.tokenizer.encode(PROMPT_TEXT)
    seq_kv = _prefill_and_export(stories, "p", prompt, greedy(5))
    other = LLM("stories260K")
    bad = SequenceKV(seq_kv.request_id, seq_kv.token_ids, seq_kv.prompt_len, seq_kv.kv[:, :, :-1],
                     seq_kv.sampling)
    with pytest.raises(ValueError, match="kv shape"):
        other.engine.import_kv(bad)
    bad_heads = SequenceKV("h", seq_kv.token_ids, seq_kv.prompt_len, seq_kv.kv[:, :, :, :2],
                           seq_kv.sampling)
    with pytest.raises(ValueError, match="kv shape"):
        other.engine.import_kv(bad_heads)
    with pytest.raises(ValueError, match="cached_prefix_kv"):
        other.engine.add_request("c", prompt, greedy(4), cached_prefix_kv=seq_kv.kv[:, :1])
    assert other.engine.requests == {}


def test_export_needs_a_parked_request(stories):
    eng = stories.engine
    eng.add_request("running", [1, 403, 407], greedy(10))
    with pytest.raises(ValueError, match="not parked"):
        eng.export_kv("running")
    with pytest.raises(UnknownRequestError):
        eng.export_kv("nobody")
    with pytest.raises(UnknownRequestError):
        eng.release("nobody")
