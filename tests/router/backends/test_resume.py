"""What a resuming router relays: each event cut to what the client lacks, a hole refused,
and the key that makes a resume the same request."""
from __future__ import annotations

import pytest

from decode_worker.messages import StreamEvent
from router.backends.resume import StreamGap, complete_reason, resume_key, unseen
from router.messages import FinishReason, GenerateRequest, Resume, SamplingOptions


def ev(index, ids, text, offset, finish=None, logprobs=None):
    return StreamEvent("r", list(ids), text, finish, 0, logprobs, None, index, offset)


def test_an_event_the_client_has_whole_is_dropped_and_a_new_one_passes_unchanged():
    assert unseen(ev(1, [5, 6], "ab", 3), tokens=3, chars=5) is None
    new = ev(3, [7], "c", 5)
    assert unseen(new, tokens=3, chars=5) is new


def test_an_event_the_client_has_part_of_is_cut_to_the_rest_with_its_logprobs():
    got = unseen(ev(1, [5, 6, 7], "abc", 3, logprobs=[(-1.0, []), (-2.0, []), (-3.0, [])]),
                 tokens=2, chars=4)
    assert (got.token_ids, got.text, got.index, got.text_offset) == ([6, 7], "bc", 2, 4)
    assert got.logprobs == [(-2.0, []), (-3.0, [])]


def test_held_back_text_released_later_is_cut_by_characters_not_tokens():
    # Text lags tokens while a stop string might complete: the client has 3 tokens, 4 chars.
    got = unseen(ev(3, [], "xyz", 2), tokens=3, chars=4)
    assert (got.token_ids, got.text) == ([], "z")


def test_a_finish_with_nothing_new_is_still_relayed():
    got = unseen(ev(0, [], "", 0, finish="abort"), tokens=5, chars=9)
    assert got is not None and got.finish_reason == "abort" and not got.token_ids and not got.text


@pytest.mark.parametrize("event", [ev(4, [1], "a", 5), ev(3, [], "a", 6)])
def test_an_event_past_what_the_client_has_is_a_hole(event):
    with pytest.raises(StreamGap):
        unseen(event, tokens=3, chars=5)


def _req(prompt=(1, 2, 3), tenant="", **sampling):
    return GenerateRequest("r", list(prompt), SamplingOptions(**sampling), tenant=tenant)


def test_the_resume_key_changes_with_tenant_prompt_or_sampling_and_not_otherwise():
    key = resume_key(_req(max_tokens=8))
    assert resume_key(_req(max_tokens=8)) == key
    assert resume_key(_req(max_tokens=8), _req(max_tokens=8).sampling.to_dict()) == key   # the caller's dict
    assert resume_key(_req(tenant="b", max_tokens=8)) != key
    assert resume_key(_req(prompt=(1, 2, 4), max_tokens=8)) != key
    assert resume_key(_req(max_tokens=9)) != key
    assert resume_key(_req(max_tokens=8, seed=1)) != key


def test_a_client_with_every_token_gets_the_finish_length_or_stop_by_its_last_token():
    def reason(last, **sampling):
        r = _req(max_tokens=3, **sampling)
        r.resume = Resume([9, 9, last], 3)
        return complete_reason(r, eos_token_ids=[2])
    assert reason(7) is FinishReason.LENGTH
    assert reason(2) is FinishReason.STOP
    assert reason(2, ignore_eos=True) is FinishReason.LENGTH
    assert reason(7, stop_token_ids=[7]) is FinishReason.STOP
    r = _req(max_tokens=4)
    r.resume = Resume([9, 9, 7], 3)
    assert complete_reason(r, eos_token_ids=[2]) is None
