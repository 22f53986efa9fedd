"""Multi-turn conversations, like production-stack's multi-round QA benchmark.

Every user shares one system prompt, then has a context of their own; each turn sends the
whole history plus a new question, and the answer that came back joins the history (the
server's own token ids when the target returns them; otherwise placeholder tokens of the
answer's length). Users start open-loop (an arrival process of users) or closed-loop
(``concurrency`` users at a time); each waits ``think_time_s`` between turns.

When a history outgrows the context, its oldest turns are dropped (after the system
prompt): a sliding window, counted in the report as ``truncated_turns``.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from loadtest.arrivals import ArrivalProcess, make_arrival
from loadtest.distributions import LengthDistribution
from loadtest.errors import SpecError
from loadtest.record import RequestRecord
from loadtest.spec import Plan, RequestSpec, Session, Workload
from loadtest.synthetic import ContextClipper
from loadtest.tokens import TokenSpace

if TYPE_CHECKING:
    from loadtest.targets.base import TargetInfo


class _Counters:
    __slots__ = ("turns", "truncated_turns", "server_answers", "placeholder_answers",
                 "ended_by_failure")

    def __init__(self) -> None:
        self.turns = self.truncated_turns = 0
        self.server_answers = self.placeholder_answers = self.ended_by_failure = 0


class Conversation(Session):
    """One user's turns; see the module doc."""

    def __init__(self, user: int, workload: MultiTurnWorkload, tokens: TokenSpace,
                 clipper: ContextClipper, rng: np.random.Generator,
                 counters: _Counters) -> None:
        self.user, self.wl, self.tokens, self.clipper = user, workload, tokens, clipper
        self.rng, self.counters = rng, counters
        self.system = tokens.block("system", 0, workload.system_prompt_len)
        self.history = tokens.block("user", user, workload.user_context_len)
        self.turn = 0
        self._question: list[int] = []

    def next_request(self, previous: RequestRecord | None) -> RequestSpec | None:
        if previous is not None:
            if not previous.ok:
                self.counters.ended_by_failure += 1
                return None
            answer = previous.output_token_ids[:previous.completion_tokens]
            if len(answer) == previous.completion_tokens:
                self.counters.server_answers += 1
            else:
                answer = self.tokens.block("answer", self.user * 100_003 + self.turn,
                                           previous.completion_tokens)
                self.counters.placeholder_answers += 1
            self.history = self.history + self._question + answer
            self.turn += 1
        if self.turn >= self.wl.turns:
            return None
        q_len = self.wl.question_len.sample(self.rng, 1)[0]
        out_len = self.wl.answer_len.sample(self.rng, 1)[0]
        self._question = self.tokens.block("question", self.user * 100_003 + self.turn, q_len)
        prompt_len, out_len = self.clipper.fit(
            len(self.system) + len(self.history) + q_len, out_len)
        keep = prompt_len - len(self.system) - len(self._question)
        if keep < 0:   # the question alone overflows: shorten it
            self._question = self._question[:len(self._question) + keep]
            keep = 0
        if keep < len(self.history):
            self.history = self.history[len(self.history) - keep:] if keep else []
            self.counters.truncated_turns += 1
        self.counters.turns += 1
        return RequestSpec(self.system + self.history + self._question, out_len,
                           session=self.user, turn=self.turn,
                           delay_s=self.wl.think_time_s if self.turn else 0.0)


class MultiTurnWorkload(Workload):
    """Conversations of ``turns`` rounds for ``users`` users (None: as many as the caps allow).

    Args:
        system_prompt_len: tokens of the system prompt shared by every user.
        user_context_len: tokens of each user's own initial context.
        question_len, answer_len: per-turn length distributions.
        arrival: open-loop process of *user* arrivals; or ``concurrency`` users at a time.
    """

    name = "multiturn"


    arrivals_are_users = True        # its arrival process starts conversations
    def __init__(self, *, turns: int, question_len: LengthDistribution,
                 answer_len: LengthDistribution, users: int | None = None,
                 system_prompt_len: int = 0, user_context_len: int = 0,
                 think_time_s: float = 0.0, arrival: ArrivalProcess | None = None,
                 concurrency: int | None = None, max_output: int | None = None,
                 seed: int = 0) -> None:
        if turns < 1 or (users is not None and users < 1):
            raise SpecError(f"need turns >= 1 and users >= 1, got {turns}, {users}")
        if system_prompt_len < 0 or user_context_len < 0 or think_time_s < 0:
            raise SpecError("system_prompt_len, user_context_len and think_time_s must be >= 0")
        if (arrival is None) == (concurrency is None):
            raise SpecError("give either a user arrival process or a concurrency")
        self.turns, self.users = turns, users
        self.question_len, self.answer_len = question_len, answer_len
        self.system_prompt_len, self.user_context_len = system_prompt_len, user_context_len
        self.think_time_s, self.arrival, self.concurrency = think_time_s, arrival, concurrency
        self.max_output, self.seed = max_output, seed
        self.counters = _Counters()
        self.clipper: ContextClipper | None = None

    def with_rate(self, rate: float, seed: int | None = None) -> MultiTurnWorkload:
        if self.arrival is None:
            raise SpecError("a closed-loop workload cannot be swept by rate")
        return MultiTurnWorkload(
            turns=self.turns, question_len=self.question_len, answer_len=self.answer_len,
            users=self.users, system_prompt_len=self.system_prompt_len,
            user_context_len=self.user_context_len, think_time_s=self.think_time_s,
            arrival=make_arrival(self.arrival.name, rate, getattr(self.arrival, "cv", None)),
            max_output=self.max_output, seed=self.seed if seed is None else seed)

    def plan(self, info: TargetInfo) -> Plan:
        if self.system_prompt_len >= info.max_model_len // 2:
            raise SpecError(f"system_prompt_len {self.system_prompt_len} must be under half "
                            f"the model's context ({info.max_model_len})")
        self.counters = _Counters()
        self.clipper = ContextClipper(info.max_model_len, self.max_output)
        tokens = TokenSpace(info.vocab_size, self.seed)
        offsets = (self.arrival.offsets(np.random.default_rng([self.seed, 2]))
                   if self.arrival is not None else None)
        return Plan(self._conversations(tokens, self.clipper), offsets, self.concurrency)

    def _conversations(self, tokens: TokenSpace,
                       clipper: ContextClipper) -> Iterator[Session]:
        user = 0
        while self.users is None or user < self.users:
            rng = np.random.default_rng([self.seed, 3, user])
            yield Conversation(user, self, tokens, clipper, rng, self.counters)
            user += 1

    def describe(self) -> dict[str, Any]:
        c = self.counters
        schedule: dict[str, Any] = (self.arrival.describe() if self.arrival is not None
                                    else {"process": "closed", "concurrency": self.concurrency})
        return {"name": self.name, "users": self.users, "turns": self.turns,
                "system_prompt_len": self.system_prompt_len,
                "user_context_len": self.user_context_len,
                "question_len": self.question_len.describe(),
                "answer_len": self.answer_len.describe(), "think_time_s": self.think_time_s,
                "user_arrivals": schedule, "seed": self.seed,
                "sent_turns": c.turns, "truncated_turns": c.truncated_turns,
                "answers_from_server_tokens": c.server_answers,
                "answers_as_placeholders": c.placeholder_answers,
                "conversations_ended_by_failure": c.ended_by_failure,
                "clipping": self.clipper.describe() if self.clipper else None}
