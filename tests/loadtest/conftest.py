"""Real servers for the load-test harness's tests: a Tandem router (gRPC) over a real
stories260K engine, and a small OpenAI-compatible HTTP front (aiohttp.web) over that
router, with a Prometheus ``/metrics`` endpoint. Both listen on free loopback ports."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest
from aiohttp import web
from loadtest_routers import make_router
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from cluster.config import AdmissionConfig


@pytest.fixture(scope="session")
def router():
    # The harness's tests count every request they send; at their rates (40 req/s of replayed
    # prompts on two shared cores) SLO admission may rightly refuse some, which is not what
    # they test (tests/router/test_admission.py does). The hard in-flight bound stays.
    with make_router(admission=AdmissionConfig(enabled=False)) as r:
        yield r


@pytest.fixture(scope="session")
def tandem_url(router) -> str:
    return f"tandem://{router.target}"


class OpenAIFront:
    """``/v1/models``, streaming ``/v1/completions`` (SSE) and ``/metrics`` in front of a
    Tandem router, through the asyncio SDK, on its own event-loop thread."""

    def __init__(self, router_target: str) -> None:
        self.router_target = router_target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self.registry = CollectorRegistry()
        self.hits = Counter("tandem_prefix_hit_tokens", "cached prompt tokens",
                            registry=self.registry)
        self.queries = Counter("tandem_prefix_query_tokens", "prompt tokens",
                               registry=self.registry)
        self.kv_bytes = Counter("tandem_kv_transfer_bytes", "KV bytes of served prompts",
                                ["codec"], registry=self.registry)
        self.queue = Gauge("tandem_queue_depth", "requests in flight", registry=self.registry)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OpenAIFront:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start(self) -> None:
        from tandem_client import AsyncTandemClient
        self.client = AsyncTandemClient(self.router_target, retries=0)
        self.info = await self.client.model_info()
        self.kv_bytes_per_token = 2 * self.info.num_layers * self.info.num_kv_heads \
            * self.info.head_dim * 4
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.client.close()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.info.model, "object": "model", "max_model_len": self.info.max_model_len}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            content_type="text/plain", charset="utf-8")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        from tandem_client import errors
        body = await request.json()
        prompt = body["prompt"]
        kwargs = dict(max_tokens=body.get("max_tokens"), temperature=body.get("temperature"),
                      ignore_eos=bool(body.get("ignore_eos")))
        stream = (self.client.stream(token_ids=prompt, **kwargs) if isinstance(prompt, list)
                  else self.client.stream(prompt, **kwargs))
        self.queue.inc()
        try:
            try:
                first = await stream.__anext__()
            except errors.TandemError as exc:
                code = {errors.ResourceExhausted: 429, errors.InvalidArgument: 400,
                        errors.Unavailable: 503, errors.DeadlineExceeded: 504}.get(type(exc), 500)
                return web.json_response({"error": {"message": str(exc)}}, status=code)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)

            async def send(obj: object) -> None:
                await resp.write(f"data: {json.dumps(obj)}\n\n".encode())

            # One chunk per token, as vLLM streams; the last one carries the finish reason,
            # so each chunk is held until the next arrives.
            pending: list[dict] = []

            async def send_delta(delta) -> None:
                for i, _ in enumerate(delta.token_ids):
                    if pending:
                        await send(pending.pop())
                    pending.append({"object": "text_completion", "model": self.info.model,
                                    "choices": [{"index": 0, "text": delta.text if i == 0 else "",
                                                 "finish_reason": None}]})

            await send_delta(first)
            async for delta in stream:
                await send_delta(delta)
            result = stream.result
            u = result.usage
            self.hits.inc(u.cached_prompt_tokens)
            self.queries.inc(u.prompt_tokens)
            self.kv_bytes.labels(codec="raw").inc(u.prompt_tokens * self.kv_bytes_per_token)
            if pending:
                pending[0]["choices"][0]["finish_reason"] = result.finish_reason
                await send(pending.pop())
            await send({"choices": [], "usage": {
                "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens}}})
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        finally:
            self.queue.dec()


@pytest.fixture(scope="session")
def openai_front(router):
    with OpenAIFront(router.target) as front:
        yield front
