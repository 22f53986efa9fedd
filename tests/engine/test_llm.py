"""The offline API on the embedded stories260K model: reference text, batching, bad input."""
from __future__ import annotations

import pytest

from engine import LLM, SamplingParams

from engine_helpers import STORIES_REFERENCE, greedy

PROMPTS = ["Once upon a time", "The little dog", "Tom and Sue went to the", "One day, a big bird"]


def test_greedy_from_bos_reproduces_the_readme_text(stories):
    out = stories.generate([[1]], greedy(60))[0]
    assert out.text.startswith(STORIES_REFERENCE)
    assert out.finish_reason == "length" and len(out.token_ids) == 60
    assert out.prompt_token_ids == [1]


def test_tokenizer_matches_the_readme_ids(stories):
    ids = stories.tokenizer.encode("Once upon a time, there was a little girl")
    assert ids == [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421]


def test_string_and_token_prompts_give_the_same_output(stories):
    text_out = stories.generate("Once upon a time", greedy(20))[0]
    ids_out = stories.generate([stories.tokenizer.encode("Once upon a time")], greedy(20))[0]
    assert text_out.token_ids == ids_out.token_ids
    assert text_out.text == ids_out.text == stories.tokenizer.decode(ids_out.token_ids)


def test_batched_equals_one_at_a_time_greedy(stories):
    batched = stories.generate(PROMPTS, greedy(48))
    for prompt, out in zip(PROMPTS, batched):
        alone = LLM("stories260K").generate([prompt], greedy(48))[0]
        assert out.token_ids == alone.token_ids
        assert out.text == alone.text


def test_batched_equals_one_at_a_time_seeded_sampling(stories):
    params = [SamplingParams(temperature=0.9, top_p=0.95, top_k=40, seed=100 + i, max_tokens=40)
              for i in range(len(PROMPTS))]
    batched = stories.generate(PROMPTS, params)
    for prompt, sp, out in zip(PROMPTS, params, batched):
        alone = LLM("stories260K").generate([prompt], sp)[0]
        assert out.token_ids == alone.token_ids


def test_outputs_come_back_in_prompt_order_with_per_prompt_params(stories):
    params = [greedy(5), greedy(9), greedy(1), greedy(13)]
    outs = stories.generate(PROMPTS, params)
    assert [len(o.token_ids) for o in outs] == [5, 9, 1, 13]
    assert [o.prompt_token_ids for o in outs] == [stories.tokenizer.encode(p) for p in PROMPTS]


@pytest.mark.parametrize("kwargs, field", [
    ({"temperature": -0.5}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"top_k": 0}, "top_k"),
])
def test_bad_sampling_params_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_sampling_params_mutated_after_construction_are_rejected_at_submit(stories):
    sp = greedy(4)
    sp.max_tokens = 0
    with pytest.raises(ValueError, match="max_tokens"):
        stories.generate(["hello"], sp)
    with pytest.raises(ValueError, match="max_tokens"):
        stories.engine.add_request("r", [1, 2, 3], sp)


@pytest.mark.parametrize("prompt", ["", []])
def test_empty_prompt_is_rejected(stories, prompt):
    with pytest.raises(ValueError, match="prompt"):
        stories.generate([prompt], greedy(4))


def test_prompt_longer_than_context_is_rejected(stories):
    context = stories.engine.max_model_len
    with pytest.raises(ValueError, match="context"):
        stories.generate([[1] * (context + 1)], greedy(4))
    with pytest.raises(ValueError, match="context"):
        stories.engine.add_request("long", [1] * context, greedy(4))


def test_out_of_vocab_token_ids_are_rejected(stories):
    with pytest.raises(ValueError, match="token ids"):
        stories.generate([[1, 512]], greedy(4))
    with pytest.raises(ValueError, match="token ids"):
        stories.generate([[1, -3]], greedy(4))


def test_a_bad_prompt_in_a_batch_starts_nothing(stories):
    with pytest.raises(ValueError):
        stories.generate(["fine", ""], greedy(4))
    assert not stories.engine.has_unfinished()
    assert stories.engine.requests == {}


def test_mismatched_param_list_is_rejected(stories):
    with pytest.raises(ValueError, match="sampling params"):
        stories.generate(PROMPTS, [greedy(4)])


def test_duplicate_request_id_is_rejected(stories):
    stories.engine.add_request("same", [1, 5], greedy(2))
    with pytest.raises(ValueError, match="already in use"):
        stories.engine.add_request("same", [1, 6], greedy(2))


def test_a_sequence_stops_at_the_end_of_the_context(stories):
    context = stories.engine.max_model_len
    prompt = [1] + [400] * (context - 4)
    out = stories.generate([prompt], greedy(100, ignore_eos=True))[0]
    assert out.finish_reason == "length"
    assert len(prompt) + len(out.token_ids) == context
