"""Real runs of the OpenAI target (SSE) against the router's OpenAI-compatible HTTP API
(router/http) over a real stories260K engine; the run that scrapes the cluster's metrics is in
test_bench_cluster.py (KV bytes move only between pools)."""
from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from aiohttp import web

from loadtest.bench import BenchConfig, run_benchmark
from loadtest.distributions import parse_length
from loadtest.errors import SpecError, TargetError
from loadtest.multiturn import MultiTurnWorkload
from loadtest.runner import RunLimits
from loadtest.synthetic import SyntheticWorkload
from loadtest.targets.base import TargetOptions, make_target


def options(**kw) -> TargetOptions:
    return TargetOptions(**{"request_timeout_s": 30, **kw})


def test_the_target_takes_the_vocabulary_and_context_from_the_routers_model_list(openai_url):
    async def open_and_close():
        target = make_target(openai_url, TargetOptions())
        try:
            return await target.open()
        finally:
            await target.close()
    info = asyncio.run(open_and_close())
    assert (info.model, info.vocab_size, info.max_model_len) == ("stories260K", 512, 512)


def test_http_rejections_are_counted_by_status(openai_url, tmp_path):
    cfg = BenchConfig(openai_url, options(max_model_len=4096),
                      RunLimits(max_requests=3, max_duration_s=30), quiet=True, plots=False)
    workload = SyntheticWorkload(parse_length("fixed:1000"), parse_length("fixed:4"),
                                 concurrency=1)
    report = asyncio.run(run_benchmark(cfg, workload, tmp_path))
    assert report.result["figures"]["counts"]["by_status"] == {"invalid": 3}
    assert all(r.error.startswith("HTTP 400") for r in report.records)
    assert not (tmp_path / "latency_cdf.png").exists()      # plots were switched off


def test_multi_turn_over_http_sends_back_the_servers_own_answers_of_the_right_length(openai_url,
                                                                                    tmp_path):
    cfg = BenchConfig(openai_url, options(), RunLimits(max_requests=20), quiet=True,
                      plots=False)
    workload = MultiTurnWorkload(turns=2, users=2, question_len=parse_length("fixed:8"),
                                 answer_len=parse_length("fixed:5"), system_prompt_len=16,
                                 concurrency=2)
    report = asyncio.run(run_benchmark(cfg, workload, tmp_path))
    assert len(report.records) == 4 and all(r.ok for r in report.records)
    described = report.result["config"]["workload"]
    # The router streams token ids, so each answer is the server's own; a server that does
    # not gets placeholders (test_workloads.py).
    assert described["answers_from_server_tokens"] == 4
    assert described["answers_as_placeholders"] == 0
    first, second = ([r for r in report.records if r.turn == t] for t in (0, 1))
    for a, b in zip(sorted(first, key=lambda r: r.session), sorted(second, key=lambda r: r.session)):
        assert len(a.output_token_ids) == 5
        # the next turn is the whole previous prompt, its 5-token answer and an 8-token question
        assert b.sent_prompt_tokens == a.sent_prompt_tokens + 5 + 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def models_without_vocabulary():
    """Stands in for a third-party server (vLLM's /v1/models says no vocabulary size): the
    router always states it, so it cannot show this case."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def models(request):
        return web.json_response({"object": "list", "data": [
            {"id": "stories260K", "object": "model", "max_model_len": 512}]})

    async def start():
        app = web.Application()
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner
    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_an_endpoint_that_does_not_state_the_vocabulary_needs_vocab_size(
        models_without_vocabulary):
    target = make_target(models_without_vocabulary, TargetOptions())
    with pytest.raises(TargetError, match="--vocab-size"):
        asyncio.run(target.open())


def test_unreachable_targets_and_bad_urls_fail_before_any_load():
    for url in (f"http://127.0.0.1:{free_port()}", f"tandem://127.0.0.1:{free_port()}"):
        target = make_target(url, options(connect_timeout_s=1.0))
        with pytest.raises(TargetError):
            asyncio.run(_open_quickly(target))
    for url in ("ftp://x:1", "127.0.0.1:50051", "tandem://"):
        with pytest.raises(SpecError, match="scheme://host:port"):
            make_target(url)


async def _open_quickly(target):
    try:
        await target.open()
    finally:
        await target.close()
