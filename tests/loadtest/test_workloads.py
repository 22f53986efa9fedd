"""Synthetic and multi-turn workloads: exact lengths, context clipping, shared prefixes,
and conversations whose histories grow with the real answers."""
from __future__ import annotations

import itertools

import pytest

from loadtest.arrivals import PoissonArrivals
from loadtest.distributions import parse_length
from loadtest.errors import SpecError
from loadtest.multiturn import MultiTurnWorkload
from loadtest.record import RequestRecord, Status
from loadtest.synthetic import SyntheticWorkload
from loadtest.targets.base import TargetInfo

INFO = TargetInfo(model="m", vocab_size=300, max_model_len=256)


def first_requests(workload, n):
    plan = workload.plan(INFO)
    return [s.next_request(None) for s in itertools.islice(plan.sessions, n)], plan


def test_synthetic_prompts_have_exact_lengths_within_the_vocabulary():
    workload = SyntheticWorkload(parse_length("uniform:5,50"), parse_length("fixed:7"),
                                 arrival=PoissonArrivals(2.0), seed=1)
    sent, plan = first_requests(workload, 200)
    assert plan.start_offsets is not None and plan.concurrency is None
    assert all(3 <= t < 300 for s in sent for t in s.token_ids)
    assert {s.max_tokens for s in sent} == {7}
    assert 5 <= min(len(s.token_ids) for s in sent) and max(len(s.token_ids) for s in sent) <= 50


def test_synthetic_lengths_are_clipped_to_the_context_and_counted():
    workload = SyntheticWorkload(parse_length("fixed:400"), parse_length("fixed:200"),
                                 concurrency=2, max_output=100)
    sent, plan = first_requests(workload, 10)
    assert plan.concurrency == 2 and plan.start_offsets is None
    assert all(len(s.token_ids) == 156 and s.max_tokens == 100 for s in sent)
    clipping = workload.describe()["clipping"]
    assert clipping["clipped_inputs"] == 10 and clipping["clipped_outputs"] == 10


def test_shared_prefix_is_shared_and_the_rest_is_not():
    workload = SyntheticWorkload(parse_length("fixed:40"), parse_length("fixed:4"),
                                 concurrency=1, shared_prefix=16)
    (a, b), _ = first_requests(workload, 2)
    assert a.token_ids[:16] == b.token_ids[:16] and a.token_ids[16:] != b.token_ids[16:]


def test_same_seed_same_prompts():
    def make(seed):
        return SyntheticWorkload(parse_length("uniform:5,50"), parse_length("fixed:3"),
                                 concurrency=1, seed=seed)
    assert first_requests(make(4), 5)[0] == first_requests(make(4), 5)[0]
    assert first_requests(make(4), 5)[0] != first_requests(make(5), 5)[0]


def test_a_workload_is_open_or_closed_loop_never_both():
    with pytest.raises(SpecError, match="either"):
        SyntheticWorkload(parse_length("4"), parse_length("4"))
    with pytest.raises(SpecError, match="either"):
        SyntheticWorkload(parse_length("4"), parse_length("4"), arrival=PoissonArrivals(1.0),
                          concurrency=2)


def answered(spec, answer: list[int], status=Status.OK) -> RequestRecord:
    return RequestRecord(index=0, status=status, completion_tokens=len(answer),
                         output_token_ids=list(answer))


def conversation_workload(**overrides):
    params = dict(turns=3, users=2, question_len=parse_length("fixed:10"),
                  answer_len=parse_length("fixed:5"), system_prompt_len=20,
                  user_context_len=8, concurrency=2, think_time_s=0.5)
    params.update(overrides)
    return MultiTurnWorkload(**params)


def test_each_turn_sends_the_history_plus_the_real_answer_plus_a_new_question():
    workload = conversation_workload()
    plan = workload.plan(INFO)
    alice, bob = list(plan.sessions)
    t0 = alice.next_request(None)
    assert len(t0.token_ids) == 20 + 8 + 10 and t0.delay_s == 0.0 and t0.turn == 0
    answer = [7, 8, 9, 10, 11]
    t1 = alice.next_request(answered(t0, answer))
    assert t1.token_ids[:len(t0.token_ids)] == t0.token_ids
    assert t1.token_ids[len(t0.token_ids):len(t0.token_ids) + 5] == answer
    assert len(t1.token_ids) == 38 + 5 + 10 and t1.turn == 1 and t1.delay_s == 0.5
    b0 = bob.next_request(None)
    assert b0.token_ids[:20] == t0.token_ids[:20]           # the shared system prompt
    assert b0.token_ids[20:28] != t0.token_ids[20:28]       # each user's own context
    t2 = alice.next_request(answered(t1, [12] * 5))
    assert alice.next_request(answered(t2, [13] * 5)) is None   # 3 turns, then done
    assert workload.describe()["answers_from_server_tokens"] == 3


def test_a_history_longer_than_the_context_keeps_the_system_prompt_and_drops_old_turns():
    workload = conversation_workload(turns=30, users=1, answer_len=parse_length("fixed:40"))
    (user,) = list(workload.plan(INFO).sessions)
    spec = user.next_request(None)
    system = spec.token_ids[:20]
    for turn in range(29):
        spec = user.next_request(answered(spec, [50 + turn % 200] * 40))
        assert len(spec.token_ids) + spec.max_tokens <= INFO.max_model_len
        assert spec.token_ids[:20] == system
    assert workload.describe()["truncated_turns"] > 0


def test_a_failed_turn_ends_the_conversation_and_is_counted():
    workload = conversation_workload()
    user = next(workload.plan(INFO).sessions)
    assert user.next_request(None) is not None          # the first turn is sent...
    failed = RequestRecord(index=0, status=Status.REFUSED)
    assert user.next_request(failed) is None
    assert workload.describe()["conversations_ended_by_failure"] == 1


def test_answers_without_token_ids_become_placeholders_of_the_answer_length():
    workload = conversation_workload()
    user = next(workload.plan(INFO).sessions)
    t0 = user.next_request(None)
    t1 = user.next_request(RequestRecord(index=0, status=Status.OK, completion_tokens=5))
    assert len(t1.token_ids) == len(t0.token_ids) + 5 + 10
    assert workload.describe()["answers_as_placeholders"] == 1


def test_a_multi_turn_workload_offers_users_per_second_not_requests():
    from loadtest.report import offered_text
    from loadtest.synthetic import expected_rate, expected_user_rate

    convo = conversation_workload(concurrency=None, arrival=PoissonArrivals(0.5))
    assert expected_rate(convo) is None and expected_user_rate(convo) == 0.5
    synth = SyntheticWorkload(parse_length("4"), parse_length("4"), arrival=PoissonArrivals(2.0))
    assert expected_rate(synth) == 2.0 and expected_user_rate(synth) is None
    assert offered_text({"offered_rps": None, "offered_users_per_s": 0.5, "send_rate_rps": 1.37}) \
        == "offered 0.50 users/s, sent 1.37 req/s"
    assert offered_text({"offered_rps": 1.0, "offered_users_per_s": None, "send_rate_rps": 0.24}) \
        == "offered 1.00 req/s, sent 0.24 req/s"
