"""TandemClient against a real router: results, streaming, errors, cancel, retries."""
from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest
from waiting import wait_until

from router.config import RouterConfig
from router.backends.local import LocalBackend
from router.testing import BackgroundRouter
from tandem_client import (
    Cancelled, DeadlineExceeded, GenerationResult, InvalidArgument, TandemClient, TandemError,
    Unavailable,
)
from tandem_client._common import RetryPolicy

LONG = dict(max_tokens=480, temperature=0.0, ignore_eos=True)


@pytest.fixture
def client(router):
    with TandemClient(router.target, timeout=30) as c:
        yield c


def test_generate_returns_the_full_result_equal_to_the_offline_engine(client, llm):
    from engine import SamplingParams
    want = llm.generate(["Once upon a time"], SamplingParams(max_tokens=20, temperature=0))[0]
    result = client.generate("Once upon a time", max_tokens=20, temperature=0)
    assert isinstance(result, GenerationResult)
    assert result.token_ids == want.token_ids and result.text == want.text
    assert result.finish_reason == "length"
    u = result.usage
    assert (u.prompt_tokens, u.completion_tokens) == (5, 20)
    assert u.ttft_ms > 0 and u.prefill_worker == "local-0" and u.decode_worker == "local-0"


def test_token_id_prompt_and_text_prompt_agree(client, llm):
    ids = llm.tokenizer.encode("Tim had a dog")
    a = client.generate("Tim had a dog", max_tokens=8, temperature=0)
    b = client.generate(token_ids=ids, max_tokens=8, temperature=0)
    assert a.token_ids == b.token_ids and a.usage.prompt_tokens == len(ids)


def test_stream_yields_contiguous_deltas_that_add_up_to_the_result(client):
    stream = client.stream("The sun", max_tokens=10, temperature=0)
    deltas = list(stream)
    assert [d.index for d in deltas] == list(range(10))
    assert stream.result.token_ids == [t for d in deltas for t in d.token_ids]
    assert stream.result.text == "".join(d.text for d in deltas)
    assert stream.request_id == stream.result.request_id != ""


def test_seeded_sampling_is_reproducible_and_stop_strings_cut(client):
    a = client.generate("Once upon a time", max_tokens=12, temperature=0.9, seed=7)
    b = client.generate("Once upon a time", max_tokens=12, temperature=0.9, seed=7)
    assert a.token_ids == b.token_ids
    stopped = client.generate("Once upon a time", max_tokens=40, temperature=0, stop=["Lily"])
    assert stopped.finish_reason == "stop" and "Lily" not in stopped.text


def test_invalid_argument_carries_the_field(client):
    with pytest.raises(InvalidArgument) as info:
        client.generate("hello", top_p=2.0)
    assert info.value.field == "sampling.top_p"
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgument) as info:
        client.generate("hello", codec="nope")
    assert info.value.field == "codec"


def test_exactly_one_prompt_kind_is_required(client):
    with pytest.raises(ValueError):
        client.generate()
    with pytest.raises(ValueError):
        client.generate("x", token_ids=[1])


def test_timeout_raises_deadline_exceeded_and_frees_blocks(client, engine_held, engine_idle):
    with engine_held(), pytest.raises(DeadlineExceeded):    # 0.3 s pass with no token
        client.generate("Once upon a time", timeout=0.3, **LONG)
    engine_idle()


def test_leaving_the_with_block_cancels_on_the_server(client, free_blocks, engine_idle):
    start = engine_idle()
    with client.stream("Once upon a time", **LONG) as stream:
        next(stream)
        assert free_blocks() < start
    engine_idle()


def test_breaking_out_of_the_loop_cancels_on_the_server(client, free_blocks, engine_idle):
    total = engine_idle()
    for _ in client.stream("Once upon a time", **LONG):
        assert free_blocks() < total
        break
    engine_idle()


def test_cancel_from_another_thread_unblocks_the_reader(client, engine_held, engine_idle):
    stream = client.stream("Once upon a time", **LONG)
    next(stream)
    with engine_held():             # the stream cannot finish first, however fast the host
        timer = threading.Timer(0.2, stream.cancel)     # the reader is waiting by then, likely
        timer.start()
        with pytest.raises(Cancelled):
            for _ in stream:
                pass
        timer.join()
    engine_idle()


def test_model_and_cluster_info(client):
    info = client.model_info()
    assert (info.model, info.vocab_size, info.max_model_len, info.eos_token_id) == (
        "stories260K", 512, 512, 2)
    cluster = client.cluster_info()
    assert cluster.healthy and cluster.pools[0].workers[0].health == "healthy"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_raises_unavailable_after_retries():
    with TandemClient(f"127.0.0.1:{_free_port()}", timeout=5, retries=2,
                      backoff_base_s=0.01) as c:
        with pytest.raises(Unavailable) as info:
            c.generate("hi", max_tokens=1)
        assert isinstance(info.value, TandemError)


def test_unavailable_is_retried_until_the_router_comes_up():
    port = _free_port()
    from engine import LLM
    backend = LocalBackend(LLM(model="stories260K", max_num_seqs=2))
    router = BackgroundRouter(backend, RouterConfig(grpc_port=port))
    failures: list[grpc.StatusCode] = []

    class SeenRetryPolicy(RetryPolicy):
        """The client's own policy, noting each failed attempt it is asked about."""

        def next_delay(self, error, *args):
            failures.append(error.code)
            return super().next_delay(error, *args)

    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
               ("grpc.max_reconnect_backoff_ms", 200)]
    out: dict[str, object] = {}
    try:
        with TandemClient(f"127.0.0.1:{port}", timeout=60, options=options) as c:
            # Retries bounded by the call's 60 s deadline, not by a count a slow start outlasts.
            c.retry = SeenRetryPolicy(retries=100_000, backoff_base_s=0.05, backoff_max_s=0.2)
            caller = threading.Thread(target=lambda: out.setdefault(
                "result", c.generate("Once", max_tokens=3, temperature=0)))
            caller.start()
            # The router comes up once the client has failed against the closed port.
            wait_until(lambda: failures or not caller.is_alive(), what="a failed attempt")
            router.start()
            caller.join(60)
        assert not caller.is_alive()
        assert failures and set(failures) == {grpc.StatusCode.UNAVAILABLE}
        assert out["result"].usage.completion_tokens == 3
    finally:
        router.stop()


def test_retry_policy_retries_only_unavailable_and_after_tokens_only_by_resuming():
    policy = RetryPolicy(retries=2, backoff_base_s=0.1, backoff_max_s=1.0, resume=False)
    unavailable = TandemError(grpc.StatusCode.UNAVAILABLE, "down")
    assert 0 <= policy.next_delay(unavailable, 0, False, None) <= 0.1
    assert 0 <= policy.next_delay(unavailable, 1, False, None) <= 0.2
    assert policy.next_delay(unavailable, 2, False, None) is None          # retries spent
    assert policy.next_delay(unavailable, 0, True, None) is None           # tokens already seen
    assert 0 <= RetryPolicy(retries=2, backoff_base_s=0.1).next_delay(unavailable, 0, True, None) <= 0.1
    exists = TandemError(grpc.StatusCode.ALREADY_EXISTS, "in flight")
    assert policy.next_delay(exists, 0, False, None) is None                  # a new request: an error
    assert RetryPolicy(retries=2, backoff_base_s=0.1).next_delay(exists, 0, True, None, resuming=True) is not None
    assert policy.next_delay(TandemError(grpc.StatusCode.INTERNAL, "x"), 0, False, None) is None
    assert policy.next_delay(unavailable, 0, False, time.monotonic()) is None  # no time left
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)
