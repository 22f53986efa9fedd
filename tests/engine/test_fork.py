"""Parallel sampling: the samples of one prompt (one fork group, a seed each) prefill it once,
share its KV (the partly filled last block copied before it is written) and produce exactly
what each sample produces alone."""
from __future__ import annotations

import pytest

from engine import LLM, SamplingParams

STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside"


@pytest.fixture
def llm() -> LLM:
    return LLM("stories260K", dtype="float32")


def _params(seed: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=24, temperature=1.0, seed=seed, ignore_eos=True, **kw)


def _drain(engine, ids: list[str]) -> dict:
    final: dict = {}
    while len(final) < len(ids):
        outs = engine.step()
        assert outs or engine.has_unfinished(), "the engine stalled"
        final.update((o.request_id, o) for o in outs if o.finished)
    return final


def _alone(prompt: list[int], seeds: list[int], **kw) -> list[list[int]]:
    ref = LLM("stories260K", dtype="float32")
    return [ref.generate([prompt], _params(s, **kw))[0].token_ids for s in seeds]


@pytest.mark.parametrize("length", [32, 27])     # a whole number of blocks, and a partial last one
def test_samples_of_a_fork_group_prefill_once_and_equal_each_sample_alone(llm, length):
    engine = llm.engine
    prompt = (llm.tokenizer.encode(STORY) * 4)[:length]
    free = engine.free_block_count()
    ids = [f"r-{i}" for i in range(4)]
    for i, rid in enumerate(ids):
        engine.add_request(rid, prompt, _params(100 + i), fork_group="r")
    final = _drain(engine, ids)
    assert [final[r].token_ids for r in ids] == _alone(prompt, [100, 101, 102, 103])
    assert len({tuple(final[r].token_ids) for r in ids}) == 4          # four different samples
    assert [final[r].num_cached_tokens for r in ids] == [0, length, length, length]
    assert engine.stats["prompt_tokens"] - engine.stats["cached_tokens"] == length   # one prefill
    assert engine.free_block_count() == free                             # every block back


def test_logprobs_and_prompt_logprobs_reach_every_sample(llm):
    engine = llm.engine
    prompt = llm.tokenizer.encode(STORY)
    for i in range(3):
        engine.add_request(f"l-{i}", prompt, _params(7 + i, logprobs=2, prompt_logprobs=1), fork_group="l")
    final = _drain(engine, ["l-0", "l-1", "l-2"])
    lead = final["l-0"]
    for out in final.values():
        assert len(out.logprobs) == 24 and out.prompt_logprobs == lead.prompt_logprobs
    # each sample's first token logprob comes from the one shared row
    first = {out.token_ids[0]: out.logprobs[0][0] for out in final.values()}
    ref = LLM("stories260K", dtype="float32").generate([prompt], _params(7, logprobs=2))[0]
    assert abs(first[ref.token_ids[0]] - ref.logprobs[0][0]) <= 1e-5


def test_a_leader_aborted_before_its_first_token_hands_the_prefill_to_a_follower(llm):
    engine = llm.engine
    prompt = llm.tokenizer.encode(STORY)
    free = engine.free_block_count()
    for i in range(3):
        engine.add_request(f"a-{i}", prompt, _params(200 + i), fork_group="a")
    assert engine.abort("a-0").finish_reason == "abort"
    assert engine.abort("a-2").finish_reason == "abort"     # a follower leaves its group too
    final = _drain(engine, ["a-1"])
    assert final["a-1"].token_ids == _alone(prompt, [201])[0]
    assert final["a-1"].num_cached_tokens == 0              # it computed the prompt itself
    assert engine.free_block_count() == free and not engine.requests


def test_a_sibling_with_other_settings_or_arriving_late_is_served_on_its_own(llm):
    engine = llm.engine
    prompt = llm.tokenizer.encode(STORY)
    engine.add_request("s-0", prompt, _params(1), fork_group="s")
    engine.add_request("s-1", prompt, _params(2, top_k=5), fork_group="s")   # not only the seed differs
    engine.step()                                            # s-0 has its first token now
    engine.add_request("s-2", prompt, _params(3), fork_group="s")
    final = _drain(engine, ["s-0", "s-1", "s-2"])
    assert [final[r].token_ids for r in ("s-0", "s-2")] == _alone(prompt, [1, 3])
    assert final["s-1"].token_ids == _alone(prompt, [2], top_k=5)[0]
    assert final["s-1"].num_cached_tokens < len(prompt)      # computed (at most its full blocks cached)


def test_prefill_only_samples_park_and_export_the_same_prompt_kv(llm):
    engine = llm.engine
    prompt = llm.tokenizer.encode(STORY)
    for i in range(3):
        engine.add_request(f"p-{i}", prompt, _params(50 + i), prefill_only=True, fork_group="p")
    outs = {o.request_id: o for o in engine.step()}
    assert sorted(outs) == ["p-0", "p-1", "p-2"] and not engine.has_unfinished()
    kvs = [engine.export_kv(f"p-{i}") for i in range(3)]
    for kv in kvs[1:]:
        assert kv.kv.equal(kvs[0].kv)
        assert kv.token_ids[:len(prompt)] == prompt
    for i in range(3):
        engine.release(f"p-{i}")
    assert not engine.requests


def test_fork_group_must_be_a_string(llm):
    with pytest.raises(ValueError, match="fork_group"):
        llm.engine.add_request("x", [1, 2, 3], _params(1), fork_group=3)


def test_a_leader_that_knows_its_group_size_waits_for_every_sibling(llm):
    """Siblings reach the engine one by one: the first is held until all have joined, so the
    prompt is computed once even when a step could run between two arrivals."""
    engine = llm.engine
    prompt = llm.tokenizer.encode(STORY)
    engine.add_request("g-0", prompt, _params(10), fork_group="g", fork_size=3)
    assert engine.has_unfinished() and engine.step() == [] and 0 < engine.idle_s() <= 0.05
    engine.add_request("g-1", prompt, _params(11), fork_group="g", fork_size=3)
    assert engine.step() == []
    engine.add_request("g-2", prompt, _params(12), fork_group="g", fork_size=3)
    assert engine.idle_s() == 0                         # complete: computes at once
    final = _drain(engine, ["g-0", "g-1", "g-2"])
    assert [final[f"g-{i}"].token_ids for i in range(3)] == _alone(prompt, [10, 11, 12])
    assert engine.stats["prompt_tokens"] - engine.stats["cached_tokens"] == len(prompt)


def test_a_sibling_that_never_comes_delays_the_others_by_the_wait_only(llm):
    engine = llm.engine
    now = [0.0]
    engine.forks.clock = lambda: now[0]
    prompt = llm.tokenizer.encode(STORY)
    engine.add_request("w-0", prompt, _params(20), fork_group="w", fork_size=3)
    engine.add_request("w-1", prompt, _params(21), fork_group="w", fork_size=3)
    assert engine.step() == [] and engine.idle_s() == pytest.approx(0.05)
    now[0] = 0.051                                       # the third was refused on its way
    assert engine.idle_s() == 0
    final = _drain(engine, ["w-0", "w-1"])
    assert [final[f"w-{i}"].token_ids for i in range(2)] == _alone(prompt, [20, 21])
    assert final["w-1"].num_cached_tokens == len(prompt)


def test_aborting_a_held_leader_lets_its_follower_compute_at_once(llm):
    engine = llm.engine
    prompt = llm.tokenizer.encode(STORY)
    free = engine.free_block_count()
    engine.add_request("h-0", prompt, _params(30), fork_group="h", fork_size=3)
    engine.add_request("h-1", prompt, _params(31), fork_group="h", fork_size=3)
    engine.abort("h-0")
    assert engine.idle_s() == 0
    final = _drain(engine, ["h-1"])
    assert final["h-1"].token_ids == _alone(prompt, [31])[0]
    assert engine.free_block_count() == free and not engine.forks.held and not engine.forks.leaders


@pytest.mark.parametrize("size", [0, True, 2.0])
def test_fork_size_is_a_positive_int(llm, size):
    with pytest.raises(ValueError, match="fork_size"):
        llm.engine.add_request("x", [1, 2, 3], _params(1), fork_group="x", fork_size=size)
    with pytest.raises(ValueError, match="fork_size"):
        llm.engine.add_request("y", [1, 2, 3], _params(1), fork_size=2)    # needs a group


def test_a_sample_arriving_after_its_groups_prefill_is_scheduled_at_once(llm):
    """Nothing is left to share once the prompt is computed: a late sibling is not held as a
    new leader for siblings that already came."""
    engine = llm.engine
    prompt = llm.tokenizer.encode(STORY)
    for i in range(2):
        engine.add_request(f"l-{i}", prompt, _params(40 + i), fork_group="late", fork_size=3)
    while engine.idle_s():                                  # held until the wait ends
        engine.step()
    engine.step()                                           # the prompt: both have a first token
    engine.add_request("l-2", prompt, _params(42), fork_group="late", fork_size=3)
    assert engine.idle_s() == 0 and not engine.forks.held and "late" not in engine.forks.closed
    final = _drain(engine, ["l-0", "l-1", "l-2"])
    assert [final[f"l-{i}"].token_ids for i in range(3)] == _alone(prompt, [40, 41, 42])
