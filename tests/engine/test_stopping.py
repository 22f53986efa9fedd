"""When generation ends, and why: max_tokens, EOS, stop token ids, stop strings, abort."""
from __future__ import annotations

import pytest

from engine import LLM

from engine_helpers import STORIES_REFERENCE, greedy
from hf_checkpoints import edit_config


@pytest.fixture
def reference(stories):
    out = stories.generate([[1]], greedy(60))[0]
    assert out.text.startswith(STORIES_REFERENCE)
    return out


@pytest.mark.parametrize("n", [1, 7, 33])
def test_max_tokens_gives_exactly_that_many_and_reason_length(stories, n):
    out = stories.generate([[1]], greedy(n))[0]
    assert len(out.token_ids) == n and out.finish_reason == "length"


def test_stop_string_cuts_the_text_before_it(stories, reference):
    out = stories.generate([[1]], greedy(60, stop=["Lily"]))[0]
    assert out.finish_reason == "stop"
    assert out.text == reference.text[:reference.text.index("Lily")]
    assert out.text.endswith("named ")


def test_earliest_of_several_stop_strings_wins(stories, reference):
    out = stories.generate([[1]], greedy(60, stop=["ball", "park", "red"]))[0]
    assert out.finish_reason == "stop"
    assert out.text == reference.text[:reference.text.index("park")]


def test_stop_string_spanning_tokens_is_found(stories, reference):
    stop = "loved to play"
    out = stories.generate([[1]], greedy(60, stop=[stop]))[0]
    assert out.text == reference.text[:reference.text.index(stop)]


def test_stop_token_id_ends_generation_with_that_token(stories, reference):
    stop_tok = reference.token_ids[9]
    first = reference.token_ids.index(stop_tok)
    out = stories.generate([[1]], greedy(60, stop_token_ids=[stop_tok]))[0]
    assert out.finish_reason == "stop"
    assert out.token_ids == reference.token_ids[:first + 1]


def test_eos_stops_unless_ignore_eos(stories, stories_copy, reference):
    # stories260K never emits its EOS greedily from BOS; declare a token it does emit as EOS.
    eos = reference.token_ids[12]
    first = reference.token_ids.index(eos)
    edit_config(stories_copy, eos_token_id=eos)
    llm = LLM(str(stories_copy))
    stopped = llm.generate([[1]], greedy(60))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == reference.token_ids[:first + 1]
    ignored = llm.generate([[1]], greedy(60, ignore_eos=True))[0]
    assert ignored.finish_reason == "length"
    assert ignored.token_ids == reference.token_ids


def _stream(eng, rid: str) -> tuple[list, object]:
    deltas, last = [], None
    while eng.has_unfinished():
        for out in eng.step():
            if out.request_id == rid:
                deltas.append(out)
                last = out
    return deltas, last


def test_streamed_deltas_add_up_to_the_final_text(stories):
    eng = stories.engine
    eng.add_request("s", [1], greedy(40))
    deltas, last = _stream(eng, "s")
    assert "".join(d.new_text for d in deltas) == last.text
    assert [t for d in deltas for t in d.new_token_ids] == last.token_ids


def test_streamed_text_never_includes_a_cut_stop_string(stories):
    eng = stories.engine
    eng.add_request("s", [1], greedy(60, stop=["loved to play"]))
    deltas, last = _stream(eng, "s")
    assert last.finish_reason == "stop"
    assert "".join(d.new_text for d in deltas) == last.text


def test_abort_reason_is_abort(stories):
    eng = stories.engine
    eng.add_request("x", [1], greedy(40))
    eng.step()
    eng.step()
    out = eng.abort("x")
    assert out.finish_reason == "abort" and len(out.token_ids) == 2


def _events(engine, rid):
    """The (new token ids, new text, finish reason) outputs of one request, until it ends."""
    events = []
    while engine.has_unfinished():
        for out in engine.step():
            if out.request_id == rid:
                events.append((out.new_token_ids, out.new_text, out.finish_reason))
                if out.finished:
                    return events
    raise AssertionError("request did not finish")


@pytest.mark.parametrize("stop, cut", [(", there", 1), (" the", 1), ("Lily", 2), ("Lily", 7),
                                       (".", 5), (",,", 1), (",,", 9)])
def test_a_resumed_request_continues_its_text_stops_and_max_tokens_exactly(stories, stop, cut):
    """Recovery re-prefills the output so far as the prompt's tail (output_len), with the
    count of chars already streamed (a stop string may hold some back); what it streams then
    completes exactly what the uninterrupted request would have streamed."""
    eng = stories.engine
    prompt = stories.tokenizer.encode("Once upon a time")
    params = greedy(24, stop=[stop])
    eng.add_request("whole", prompt, params)
    whole = _events(eng, "whole")
    want_ids = [t for ids, _, _ in whole for t in ids]
    want_text, want_reason = "".join(t for _, t, _ in whole), whole[-1][2]
    assert len(want_ids) > cut              # the failure comes before the end
    head = whole[:cut]                      # one token per output: what streamed before a failure
    head_ids = [t for ids, _, _ in head for t in ids]
    head_text = "".join(t for _, t, _ in head)
    assert len(head_ids) == cut
    eng.add_request("resumed", prompt + head_ids, params, output_len=cut,
                    output_text_offset=len(head_text))
    rest = _events(eng, "resumed")
    assert head_ids + [t for ids, _, _ in rest for t in ids] == want_ids
    assert head_text + "".join(t for _, t, _ in rest) == want_text and rest[-1][2] == want_reason


def test_output_len_must_leave_a_prompt(stories):
    with pytest.raises(ValueError, match="output_len"):
        stories.engine.add_request("x", [1, 2], greedy(4), output_len=2)
