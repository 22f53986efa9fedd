"""The SDK over several routers: calls are spread across them, and when one goes away the
calls that would have gone to it are served by another (before their first token), with no
error reaching the caller. Plus how targets are written: a list, names, a DNS URI."""
from __future__ import annotations

import pytest

from engine import LLM, SamplingParams
from router.backends.local import LocalBackend
from router.config import AdmissionConfig, RouterConfig
from router.testing import BackgroundRouter
from tandem_client import TandemClient
from tandem_client._common import channel_target


def _router() -> tuple[BackgroundRouter, LLM]:
    llm = LLM(model="stories260K", max_num_seqs=8)
    router = BackgroundRouter(LocalBackend(llm), RouterConfig(grpc_port=0, admission=AdmissionConfig(enabled=False)))
    router.start()
    return router, llm


def test_calls_spread_over_routers_and_move_to_the_survivor_when_one_stops():
    (r1, llm1), (r2, llm2) = _router(), _router()
    try:
        want = LLM("stories260K").generate("Once upon a time", SamplingParams(temperature=0, max_tokens=8))[0].token_ids
        options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
        with TandemClient([r1.target, r2.target], timeout=60, retries=5, backoff_base_s=0.02,
                          options=options) as client:
            for _ in range(12):
                assert client.generate("Once upon a time", max_tokens=8, temperature=0).token_ids == want
            assert llm1.engine.stats["generated_tokens"] > 0 and llm2.engine.stats["generated_tokens"] > 0
            r1.stop()                                          # one router goes away
            served_before = llm2.engine.stats["generated_tokens"]
            for _ in range(12):                                # no caller sees an error
                assert client.generate("Once upon a time", max_tokens=8, temperature=0).token_ids == want
            assert llm2.engine.stats["generated_tokens"] - served_before == 12 * 8
    finally:
        r1.stop()
        r2.stop()


def test_targets_are_one_address_a_list_or_a_dns_uri():
    assert channel_target("127.0.0.1:5000") == ("127.0.0.1:5000", [])
    assert channel_target(["127.0.0.1:5000", "localhost:5001"]) == (
        "ipv4:127.0.0.1:5000,127.0.0.1:5001", [("grpc.lb_policy_name", "round_robin")])
    assert channel_target(["[::1]:5000", "[::1]:5001"])[0] == "ipv6:[::1]:5000,[::1]:5001"
    target, opts = channel_target("dns:///localhost:5000", [("grpc.lb_policy_name", "pick_first")])
    assert target == "dns:///localhost:5000" and opts == [("grpc.lb_policy_name", "pick_first")]
    assert channel_target("dns:///localhost:5000")[1] == [("grpc.lb_policy_name", "round_robin")]


@pytest.mark.parametrize("bad, match", [
    ([], "non-empty"), (["127.0.0.1"], "host:port"), (["127.0.0.1:x"], "host:port"),
    (["127.0.0.1:1", "[::1]:2"], "IPv4 and IPv6"), (["no-such-host.invalid:1", "127.0.0.1:2"], "cannot resolve"),
])
def test_bad_target_lists_are_refused_with_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        channel_target(bad)
