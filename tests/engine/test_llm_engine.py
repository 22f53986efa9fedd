"""LLMEngine behaviour: chunked prefill, paging, prefix sharing, preemption, abort."""
from __future__ import annotations

import random


from engine import LLM, SamplingParams

from engine_helpers import assert_fp32_close, greedy, run_to_completion

STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
         "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high. "
         "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do.")


def _ids(llm: LLM, text: str = STORY) -> list[int]:
    return llm.tokenizer.encode(text)


def test_chunked_prefill_equals_one_shot_prefill():
    one_shot = LLM("stories260K", max_num_batched_tokens=2048)
    chunked = LLM("stories260K", max_num_batched_tokens=7)     # 7 does not divide a block
    prompt = _ids(one_shot)
    assert len(prompt) > 60
    a = one_shot.generate([prompt], greedy(40))[0]
    b = chunked.generate([prompt], greedy(40))[0]
    assert a.token_ids == b.token_ids
    # The KV itself: export after prefill from both engines.
    kvs = []
    for llm in (one_shot, chunked):
        llm.engine.add_request("p", prompt, greedy(4), prefill_only=True)
        run_to_completion_parked(llm.engine, "p")
        kvs.append(llm.engine.export_kv("p").kv)
        llm.engine.release("p")
    assert_fp32_close(kvs[0], kvs[1])


def run_to_completion_parked(engine, request_id: str) -> None:
    """Step until ``request_id`` (prefill_only) has its first token and is parked."""
    for _ in range(1000):
        for out in engine.step():
            if out.request_id == request_id:
                assert out.finish_reason is None and len(out.token_ids) == 1
                return
    raise AssertionError("prefill did not complete")


def test_chunked_prefill_runs_beside_decoding_sequences():
    ref = LLM("stories260K")
    mixed = LLM("stories260K", max_num_batched_tokens=9)
    long_prompt, short_prompt = _ids(ref), _ids(ref, "The dog")
    want = [ref.generate([p], greedy(30))[0].token_ids for p in (short_prompt, long_prompt)]
    got = mixed.generate([short_prompt, long_prompt], greedy(30))
    assert [o.token_ids for o in got] == want


def test_paged_attention_equals_contiguous_cache():
    """One block per sequence (contiguous) vs 4-token blocks scattered by interleaved growth."""
    contiguous = LLM("stories260K", block_size=512, max_num_seqs=4)
    paged = LLM("stories260K", block_size=4, max_num_seqs=4)
    prompts = [_ids(contiguous, t) for t in ("Once upon a time", "The little dog ran", "Sue", STORY)]
    want = contiguous.generate(prompts, greedy(50))
    eng = paged.engine
    for i, p in enumerate(prompts):
        eng.add_request(f"r{i}", p, greedy(50))
    scattered = False
    final = {}
    while eng.has_unfinished():
        for seq in eng.scheduler.running:
            table = seq.block_table
            scattered |= any(b - a != 1 for a, b in zip(table, table[1:]))
        for out in eng.step():
            if out.finished:
                final[out.request_id] = out
    assert scattered, "the test should exercise non-contiguous block tables"
    assert [final[f"r{i}"].token_ids for i in range(4)] == [o.token_ids for o in want]
    ids = prompts[3]
    assert_fp32_close(paged.engine.prompt_logits(ids), contiguous.engine.prompt_logits(ids))


def test_prompt_logits_after_a_given_prefix_kv_equal_the_full_pass(stories):
    eng = stories.engine
    ids = _ids(stories)
    full = eng.prompt_logits(ids)
    eng.add_request("p", ids[:40], greedy(4), prefill_only=True)
    run_to_completion_parked(eng, "p")
    prefix = eng.export_kv("p").kv
    eng.release("p")
    tail = eng.prompt_logits(ids, prefix_kv=prefix[:, :, :33])
    assert_fp32_close(tail, full[33:])


def test_identical_prefixes_share_blocks_and_give_the_same_output():
    llm = LLM("stories260K", block_size=16)
    eng = eng0 = llm.engine
    prompt = _ids(llm)
    start = eng.free_block_count()
    eng.add_request("a", prompt, greedy(8))
    eng.step()                                  # prefill "a" and publish its full blocks
    used_by_a = start - eng.free_block_count()
    eng.add_request("b", prompt, greedy(8))
    eng.step()
    used_by_b = start - eng.free_block_count() - used_by_a
    assert used_by_b < used_by_a
    final = run_to_completion(eng)
    assert final["b"].num_cached_tokens == (len(prompt) - 1) // 16 * 16 > 0
    assert final["a"].num_cached_tokens == 0
    assert final["a"].token_ids == final["b"].token_ids
    no_cache = LLM("stories260K", enable_prefix_caching=False).generate([prompt], greedy(8))[0]
    assert no_cache.token_ids == final["b"].token_ids and no_cache.num_cached_tokens == 0
    assert eng0.free_block_count() == start


def test_finished_requests_leave_their_prefix_cached_for_later_ones(stories):
    prompt = _ids(stories)
    first = stories.generate([prompt], greedy(4))[0]
    second = stories.generate([prompt + [300]], greedy(4))[0]
    assert first.num_cached_tokens == 0 and second.num_cached_tokens >= 64
    salted = stories.engine
    salted.add_request("salted", prompt, greedy(4), cache_salt=b"tenant-b")
    assert run_to_completion(salted)["salted"].num_cached_tokens == 0


def test_preemption_under_block_pressure_keeps_outputs_exact():
    prompts = [[1] + [(13 * i + j) % 400 + 20 for j in range(30)] for i in range(6)]
    want = LLM("stories260K").generate(prompts, greedy(60, ignore_eos=True))
    # 33 blocks of 16: one full 512 context, far less than 6 sequences of ~90 tokens.
    tight = LLM("stories260K", num_kv_blocks=33, max_num_seqs=6)
    got = tight.generate(prompts, greedy(60, ignore_eos=True))
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert tight.engine.free_block_count() == 33


def test_abort_finishes_with_reason_abort_and_frees_blocks(stories):
    eng = stories.engine
    start = eng.free_block_count()
    eng.add_request("a", _ids(stories), greedy(100))
    eng.add_request("w", [1, 7], greedy(100))
    eng.step()
    out = eng.abort("a")
    assert out.finish_reason == "abort" and out.finished
    assert eng.abort("a") is None                        # unknown now: no error, no output
    assert eng.abort("w").finish_reason == "abort"
    assert not eng.has_unfinished()
    assert eng.free_block_count() == start


def test_blocks_do_not_leak_across_1000_mixed_requests():
    llm = LLM("stories260K", block_size=8, max_num_seqs=24, num_kv_blocks=300,
              max_num_batched_tokens=96)
    eng, pool = llm.engine, llm.engine.pool
    start = eng.free_block_count()
    rng = random.Random(0)
    shared = [1] + [rng.randrange(3, 512) for _ in range(40)]
    live: list[str] = []
    parked: list[str] = []
    reasons: dict[str, int] = {}
    for i in range(1000):
        plen = rng.randrange(1, 40)
        prompt = shared[:plen] if rng.random() < 0.5 else [1] + [rng.randrange(3, 512) for _ in range(plen)]
        sp = SamplingParams(temperature=rng.choice([0.0, 0.8]), max_tokens=rng.randrange(1, 6),
                            seed=i, ignore_eos=True)
        rid = f"r{i}"
        eng.add_request(rid, prompt, sp, prefill_only=rng.random() < 0.1)
        live.append(rid)
        if rng.random() < 0.5:
            for out in eng.step():
                if out.finished:
                    reasons[out.finish_reason] = reasons.get(out.finish_reason, 0) + 1
                    live.remove(out.request_id)
                elif eng.requests[out.request_id].status.value == "parked":
                    parked.append(out.request_id)
                    live.remove(out.request_id)
        if live and rng.random() < 0.3:
            victim = live.pop(rng.randrange(len(live)))
            eng.abort(victim)
            reasons["abort"] = reasons.get("abort", 0) + 1
        while parked and rng.random() < 0.5:
            rid = parked.pop(0)
            if rng.random() < 0.5:
                eng.export_kv(rid)
                eng.release(rid)
            else:
                eng.abort(rid)
    for out in run_to_completion(eng).values():
        reasons[out.finish_reason] = reasons.get(out.finish_reason, 0) + 1
    for rid in [r for r, s in eng.requests.items() if s.status.value == "parked"]:
        eng.release(rid)
    assert reasons.get("abort", 0) > 100 and reasons.get("length", 0) > 100
    assert eng.requests == {}
    assert eng.free_block_count() == start
    assert all(rc == 0 for rc in pool.ref_count)
    assert all(pool.block_hash[b] == h for h, b in pool.by_hash.items())


def test_block_hashes_are_the_shared_chunk_hashes(stories):
    """The engine's prefix index uses the same chained hashes as the store and the router."""
    from tandem_common.hashing import chunk_hashes

    eng = stories.engine
    prompt = _ids(stories)
    eng.add_request("h", prompt, greedy(3), prefill_only=True, cache_salt=b"t1")
    run_to_completion_parked(eng, "h")
    seq = eng.requests["h"]
    assert seq.block_hashes == chunk_hashes(prompt, 16, salt=b"t1")
    eng.release("h")
