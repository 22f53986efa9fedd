"""The disaggregated serving path end to end: real Ray pools, real redis-server, real gRPC;
the KV hand-off runs raw + zstd (lossless), so its outputs must equal the offline engine's."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from cluster.config import load_config  # noqa: E402
from cluster.testing import BackgroundCluster  # noqa: E402
from engine import LLM, SamplingParams  # noqa: E402
from tandem_client.errors import InvalidArgument  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from logprobs_check import assert_logprobs_match_hf  # noqa: E402
from penalties import assert_served_penalties_equal_offline  # noqa: E402
from samples_check import assert_samples_prefill_once  # noqa: E402
from stop_strings import assert_served_text_equals_offline, offline_cases  # noqa: E402
from waiting import wait_until  # noqa: E402

PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "The little dog was sad because",
           "Tom had a red ball", "One day, a cat", "The sun was shining and", "Sara wanted to",
           "There was a big tree"]
MAX_TOKENS = 40


def _cfg(mode: str, **extra: str):
    # SLO admission off: these tests send bursts (32, 100 streams) and count every request;
    # on a loaded host admission may rightly refuse some, which is not what they test
    # (tests/router/test_admission.py and test_burst_admission.py do). max_inflight stays.
    # Prefill overflow off: these tests follow each request through the hand-off (the one
    # that tests overflow turns it on).
    overrides = [f"mode={mode}", "router.grpc_port=0", "router.http_port=0", "router.admission.enabled=false",
                 "pools.prefill.cpus_per_worker=0.25",
                 "pools.decode.cpus_per_worker=0.25", "pools.decode.workers=2", "pools.prefill.workers=2", "model.num_threads=1",
                 "router.health_poll_s=0.2", "model.max_num_seqs=64", "router.prefill_overflow=false"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def cluster():
    # The KV goes through an exact codec stack other than bare raw (raw + zstd): every output
    # check below (offline equality, stop strings, logprobs, penalties, samples) covers it.
    with BackgroundCluster(_cfg("disaggregated", **{"kv_transfer.entropy": "zstd"})) as c:
        yield c


@pytest.fixture(scope="module")
def offline():
    llm = LLM("stories260K", max_num_seqs=64)
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=MAX_TOKENS))
    return {p: o for p, o in zip(PROMPTS, outs)}


def _free_blocks(cluster) -> dict[str, int]:
    cluster.call(cluster.backend.registry.refresh_once())
    return {v.name: v.free_kv_blocks for pool in cluster.backend.registry.views.values()
            for v in pool.values()}


def _wait_blocks_back(cluster, start: dict[str, int], timeout: float = 30.0) -> dict[str, int]:
    end = time.monotonic() + timeout
    now = _free_blocks(cluster)
    while now != start and time.monotonic() < end:
        time.sleep(0.2)
        now = _free_blocks(cluster)
    return now


def test_32_concurrent_streams_are_token_identical_to_the_offline_engine(cluster, client, offline):
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        prompt = PROMPTS[i % len(PROMPTS)]
        try:
            with client.stream(prompt, max_tokens=MAX_TOKENS, temperature=0) as s:
                pieces = [d.text for d in s]
                results[i] = (prompt, s.result, "".join(pieces))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 32
    for prompt, res, streamed_text in results.values():
        want = offline[prompt]
        assert res.token_ids == want.token_ids, prompt
        assert res.text == want.text == streamed_text
        assert res.finish_reason == want.finish_reason
        assert res.usage.prefill_worker.startswith("tandem-prefill-")
        assert res.usage.decode_worker.startswith("tandem-decode-")
        assert res.usage.completion_tokens == len(want.token_ids)


def test_a_burst_overflows_prompts_to_decode_workers_with_the_offline_engines_tokens(cluster, client, offline):
    """With the prefill pool busy (a burst) some prompts are computed on their decode worker
    (router.prefill_overflow, on by default; off in this module's other tests): the same tokens
    as offline, nothing left pending, every KV block back."""
    backend = cluster.backend
    backend.overflow.enabled = True
    try:
        _burst_overflows(cluster, client, offline)
    finally:
        backend.overflow.enabled = False


def _burst_overflows(cluster, client, offline) -> None:
    backend = cluster.backend
    client.generate(PROMPTS[0], max_tokens=2, temperature=0)        # the prefill speeds get measured
    wait_until(lambda: cluster.call(backend.registry.refresh_once()) or all(
        v.last_load is not None and v.last_load.prefill_tokens_per_s > 0
        for v in backend.registry.healthy("prefill")), timeout=30, interval=0.2)
    start_blocks = _free_blocks(cluster)
    before = backend.overflow.overflowed
    results: dict[int, object] = {}

    def run(i: int) -> None:
        results[i] = client.generate(PROMPTS[i % len(PROMPTS)], max_tokens=MAX_TOKENS, temperature=0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 48
    overflowed = [r for r in results.values() if r.usage.prefill_worker == r.usage.decode_worker]
    assert overflowed and backend.overflow.overflowed - before == len(overflowed)
    for i, res in results.items():
        assert res.token_ids == offline[PROMPTS[i % len(PROMPTS)]].token_ids
    assert backend.overflow.pending == {}
    assert _wait_blocks_back(cluster, start_blocks) == start_blocks


def test_stop_strings_give_the_offline_engines_text_through_grpc_and_http(cluster):
    """The first token's text is sampled on prefill and must not be re-emitted by decode."""
    url = f"http://127.0.0.1:{cluster.cluster.server.http_port}"
    assert_served_text_equals_offline(cluster.target, url, offline_cases())


def test_logprobs_equal_hf_transformers_log_softmax_through_sdk_and_openai(cluster):
    url = f"http://127.0.0.1:{cluster.cluster.server.http_port}"
    assert_logprobs_match_hf(cluster.target, url)


def test_n_seeded_samples_are_reproducible_and_prefill_their_prompt_once(cluster):
    assert_samples_prefill_once(cluster.target, f"http://127.0.0.1:{cluster.cluster.server.http_port}")


def test_penalties_and_min_tokens_apply_on_prefill_and_decode_alike(cluster):
    assert_served_penalties_equal_offline(cluster.target)


def test_model_info_names_the_dtype_the_workers_run(cluster, client):
    assert client.model_info().dtype == "float32"              # stories260K's checkpoint dtype


def test_a_shared_system_prompt_is_served_from_cache_on_the_second_request(client):
    system = " ".join(["The kind old man told the children a story about a brave little fox."] * 12)
    first = client.generate(system + " Then Lily said", max_tokens=8, temperature=0)
    second = client.generate(system + " Then Ben asked", max_tokens=8, temperature=0)
    assert first.usage.prompt_tokens > 256
    assert second.usage.cached_prompt_tokens >= 256
    assert second.usage.cached_prompt_tokens < second.usage.prompt_tokens


def test_cancelling_100_streams_mid_flight_returns_every_kv_block(cluster, client):
    start = _free_blocks(cluster)
    streams = [client.stream(PROMPTS[i % len(PROMPTS)], max_tokens=200, temperature=0, ignore_eos=True)
               for i in range(100)]
    for s in streams[:50]:
        next(iter(s))          # wait for the first token: the request is in flight on both pools
    for s in streams:
        s.cancel()
    assert _wait_blocks_back(cluster, start) == start


def test_decode_workers_told_at_admission_stop_waiting_when_no_kv_will_come(cluster, client):
    """The decode worker is told at admission and waits for the KV while prefill runs. When
    none will come (the request ends at its first token, or the client cancels it during
    prefill), the prefill side cancels the transfer and the wait ends at once: no receive is
    left waiting out the request's deadline (120 s here), and streamed requests still work."""
    import ray

    handles = cluster.cluster.pools["decode"].handles
    for i in range(12):                                     # ended by prefill: max_tokens 1
        out = client.generate(PROMPTS[i % len(PROMPTS)] + f" {i}", max_tokens=1, temperature=0)
        assert out.finish_reason == "length" and len(out.token_ids) == 1
    streams = [client.stream(PROMPTS[i % len(PROMPTS)] * 8, max_tokens=50, temperature=0)
               for i in range(12)]
    for s in streams:                                       # cancelled while prefills queue
        s.cancel()
    wait_until(lambda: sum(ray.get([h.receives_in_flight.remote() for h in handles.values()])) == 0,
               20, "every early KV receive to end")
    full = client.generate(PROMPTS[0], max_tokens=8, temperature=0)
    assert len(full.token_ids) == 8


def test_killing_a_decode_actor_mid_stream_recovers_exactly_the_requests_it_held(cluster, client, offline,
                                                                                 caplog):
    """The victim's engine is wedged mid-stream (so which requests it holds cannot change),
    the router's stream hub says which requests are assigned to it, then the actor is killed:
    exactly those requests are re-prefilled, each once, with exactly the tokens streamed so
    far, and every output equals the offline engine's. Half the requests carry stop strings:
    ",," holds back every comma, so a recovery must carry the held-back text and the stop
    state across the re-prefill."""
    import re

    import ray

    victim = "tandem-decode-0"
    handle = cluster.cluster.pools["decode"].handles[victim]
    stops = [",,", "Lily"]
    with_stops = {p: o for p, o in zip(PROMPTS, LLM("stories260K").generate(
        PROMPTS, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, stop=stops)))}
    assert min(len(o.token_ids) for o in [*offline.values(), *with_stops.values()]) > 6
    rids = [f"decode-kill-{i}" for i in range(len(PROMPTS))]
    results: dict[int, object] = {}
    received: dict[str, int] = dict.fromkeys(rids, 0)      # tokens each client has streamed
    errors: list[BaseException] = []

    def run(i: int) -> None:
        prompt = PROMPTS[i]
        try:
            with client.stream(prompt, max_tokens=MAX_TOKENS, temperature=0, request_id=rids[i],
                               stop=stops if i % 2 else None) as s:
                texts = []
                for delta in s:
                    texts.append(delta.text)
                    received[rids[i]] += len(delta.token_ids)
                results[i] = (prompt, s.result, "".join(texts))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    # Fault injection, run inside the decode actor (``__ray_call__``; defined here so Ray
    # pickles them by value): the first engine step after which a request on the victim has
    # 6 output tokens and is unfinished wedges its engine thread. The worker's own observer
    # runs first, so that step's events are in the outbox: the router can stream everything
    # up to the wedge and nothing after it.
    def install_stall(worker, hold_at: int) -> None:
        import threading as th

        stall = {"held": th.Event(), "release": th.Event(), "finished": set(), "tokens": {}}

        def observe(outputs) -> None:
            stall["finished"].update(o.request_id for o in outputs if o.finished)
            if stall["held"].is_set() or not any(
                    not o.finished and len(o.token_ids) >= hold_at for o in outputs):
                return
            # Every request the engine holds and how many tokens each has produced (the
            # first came from prefill), read on the engine thread, which is about to stop.
            stall["tokens"] = {rid: len(seq.output_ids) for rid, seq in worker.engine.requests.items()}
            stall["held"].set()
            stall["release"].wait()

        worker.tandem_test_stall = stall
        worker.driver.add_observer(observe)

    def stall_state(worker) -> tuple[bool, set[str], dict[str, int]]:
        stall = worker.tandem_test_stall
        return stall["held"].is_set(), set(stall["finished"]), dict(stall["tokens"])

    def release_stall(worker) -> None:
        worker.tandem_test_stall["release"].set()

    async def assigned_to_victim() -> set[str]:
        # The router's per-request state: which decode worker streams each request.
        return {rid for rid, (worker, _) in cluster.backend.hub.subscribers.items() if worker == victim}

    ray.get(handle.__ray_call__.remote(install_stall, 6), timeout=30)
    killed = False
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: ray.get(handle.__ray_call__.remote(stall_state), timeout=30)[0],
                   timeout=120, what=f"{victim} wedged with a request 6 tokens in", interval=0.1)
        _, finished_there, engine_tokens = ray.get(handle.__ray_call__.remote(stall_state), timeout=30)
        done = set()

        def settled() -> bool:
            # Nothing the victim produced is still on its way: every request is finished at its
            # client or assigned to the victim, none of those finished there, and each client
            # has every token the victim's engine made for it (a request whose KV import is
            # queued behind the wedge has the first token, from prefill).
            nonlocal done
            held = cluster.call(assigned_to_victim()) & set(rids)
            done = {rids[i] for i in results}
            return (done | held == set(rids) and not held & finished_there
                    and all(received[r] == engine_tokens.get(r, 1) for r in held))

        wait_until(settled, timeout=120, what="the router holding every event the victim produced")
        held = cluster.call(assigned_to_victim()) & set(rids)
        streamed_at_kill = {r: received[r] for r in held}
        assert held, f"{victim} held no request when it was killed"
        assert not held & done
        ray.kill(handle, no_restart=False)
        killed = True
    finally:
        if not killed:
            ray.get(handle.__ray_call__.remote(release_stall), timeout=30)
        for t in threads:
            t.join(120)
    assert not errors, errors
    assert len(results) == len(PROMPTS)
    for i, (prompt, res, streamed) in results.items():
        want = (with_stops if i % 2 else offline)[prompt]
        assert res.token_ids == want.token_ids, prompt
        assert res.text == streamed == want.text, prompt
        assert res.finish_reason == want.finish_reason, prompt
    # Each recovery re-prefills the prompt and what it had generated (at least the first token).
    recoveries = [(m.group(1), *map(int, m.groups()[1:])) for m in (
        re.search(r"request (\S+): .*; re-prefilling (\d+) tokens \((\d+) prompt \+ (\d+) generated",
                  r.getMessage()) for r in caplog.records) if m]
    assert recoveries, "no recovery was logged"
    assert all(total == prompt + gen and gen >= 1 for _, total, prompt, gen in recoveries), recoveries
    # Exactly the requests on the killed worker were recovered, each once, from where its
    # stream stood.
    assert sorted(rid for rid, *_ in recoveries) == sorted(held)
    assert {rid: gen for rid, _, _, gen in recoveries} == streamed_at_kill
    assert max(streamed_at_kill.values()) >= 6        # at least one was well into its stream


def test_a_dead_prefill_worker_is_retried_on_another_without_the_client_noticing(cluster, client):
    import ray

    long_prompt = " ".join(PROMPTS * 6)
    want = LLM("stories260K").generate([long_prompt], SamplingParams(temperature=0, max_tokens=8))[0]
    # Dead, but the router has not noticed yet: the next request is routed to it and must be retried.
    ray.kill(cluster.cluster.pools["prefill"].handles["tandem-prefill-0"], no_restart=True)
    views = cluster.backend.registry.views["prefill"]
    views["tandem-prefill-0"].healthy = True
    views["tandem-prefill-1"].inflight += 10     # the dead one looks idler: it is picked first
    try:
        results = [client.generate(long_prompt, max_tokens=8, temperature=0)]
    finally:
        views["tandem-prefill-1"].inflight -= 10
    results += [client.generate(long_prompt, max_tokens=8, temperature=0) for _ in range(3)]
    assert [r.token_ids for r in results] == [want.token_ids] * 4
    assert {r.usage.prefill_worker for r in results} == {"tandem-prefill-1"}
    assert not cluster.backend.registry.views["prefill"]["tandem-prefill-0"].healthy


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt": ""}, "prompt.text"),
    ({"prompt": "hi", "temperature": -1.0}, "sampling.temperature"),
    ({"prompt": "hi", "top_p": 1.5}, "sampling.top_p"),
    ({"prompt": "hi", "max_tokens": 100000}, "sampling.max_tokens"),
    ({"prompt": "hi", "codec": "no-such-codec"}, "codec"),
])
def test_bad_input_gets_invalid_argument_naming_the_field(client, kwargs, field):
    prompt = kwargs.pop("prompt")
    with pytest.raises(InvalidArgument) as info:
        client.generate(prompt, **kwargs)
    assert info.value.field == field


def test_a_killed_private_redis_is_restarted_within_5_s_and_prefix_reuse_resumes(cluster, client):
    import redis as redis_py

    server = cluster.cluster.redis
    pid = server.pid
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    while not (server.restarts >= 1 and server.ping()):
        assert time.monotonic() - start < 5.0, "the private redis-server was not restarted in 5 s"
        time.sleep(0.05)
    assert server.pid != pid
    # The restarted server is empty (a cache): a new shared prefix is written to it and reused.
    system = " ".join(["A tall giraffe named Gus ate green leaves high up in the old tree."] * 12)
    first = client.generate(system + " Then Mia said", max_tokens=4, temperature=0)
    db = redis_py.Redis.from_url(server.url)
    deadline = time.monotonic() + 15
    while db.dbsize() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert db.dbsize() > 0, "no KV chunk reached the restarted redis-server"
    db.close()
    second = client.generate(system + " Then Sam asked", max_tokens=4, temperature=0)
    assert first.usage.prompt_tokens > 256 and second.usage.cached_prompt_tokens >= 256
