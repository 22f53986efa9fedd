"""One OpenAI generation request through the gateway: its samples, then the whole response
or the SSE stream.

``n`` > 1 (and ``best_of``) is served as that many requests through the gateway, each with
its own id (``<id>-<i>``) and seed (``seed + i``, as vLLM does), all in one fork group: they
go to one worker, whose engine computes the prompt once and forks its KV to every sample
(``engine.fork``). Every sample passes admission and the tenant's limits as a request does;
when one is refused or fails, the others are cancelled and the client gets that error.
``best_of`` samples that many and returns the ``n`` with the highest cumulative logprob
(not streamed); the usage counts every generated token, the returned ones or not.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from router.auth import Principal
from router.convert import RawRequest
from router.errors import RouterError
from router.gateway import ClientGone, Gateway
from router.http.errors import response_for
from router.http.openai_api import OpenAIRequest
from router.http.responses import ResponseBuilder, merge_usage, sse
from router.messages import Finished, GenerateRequest, TokenDelta

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Sample:
    """What one sample streamed (kept for the whole response)."""
    raw: RawRequest
    index: int
    builder: ResponseBuilder | None = None
    prompt: tuple[list[int], str | None] = ([], None)
    texts: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    prompt_logprobs: list = field(default_factory=list)
    finished: Finished | None = None

    def collect(self, event) -> None:
        delta = event if isinstance(event, TokenDelta) else event.delta
        if delta is not None:
            self.texts.append(delta.text)
            self.token_ids.extend(delta.token_ids)
            self.logprobs.extend(delta.logprobs or ())
            self.prompt_logprobs.extend(delta.prompt_logprobs or ())

    @property
    def cumulative_logprob(self) -> float:
        return sum(lp for lp, _ in self.logprobs)


class Generation:
    """Serves one parsed completions or chat request (``parsed``) for ``principal``."""

    def __init__(self, gateway: Gateway, parsed: OpenAIRequest, principal: Principal, chat: bool) -> None:
        self.gateway, self.parsed, self.principal, self.chat = gateway, parsed, principal, chat
        raw, k = parsed.raw, parsed.best_of or parsed.n
        self.request_id = raw.request_id or (uuid.uuid4().hex if k > 1 else "")
        # The group id is the server's own: a client's request id may repeat (another tenant,
        # a retry), and samples of different requests must never share a prefill.
        self.fork_group = uuid.uuid4().hex if k > 1 else ""
        self.samples = [_Sample(raw, 0)] if k == 1 else [
            _Sample(self._child(raw, i, k), i) for i in range(k)]

    def _child(self, raw: RawRequest, i: int, k: int) -> RawRequest:
        child = dataclasses.replace(raw, request_id=f"{self.request_id[:120]}-{i}",
                                    seed=None if raw.seed is None else raw.seed + i,
                                    fork_group=self.fork_group, fork_size=k)
        if self.parsed.best_of > self.parsed.n and child.logprobs is None:
            child.logprobs = 0           # ranking needs each sampled token's logprob
        return child

    @property
    def response_id(self) -> str:
        return self.request_id or self.samples[0].builder.id.split("-", 1)[1]

    def _on_request(self, sample: _Sample) -> Callable[[GenerateRequest], None]:
        def on_request(req: GenerateRequest) -> None:
            wants = self.parsed.raw.logprobs is not None        # what the client asked for
            decode = self.gateway.backend.tokenizer.decode if wants else None
            sample.builder = ResponseBuilder(self.request_id or req.request_id, self.gateway.info.model,
                                             self.chat, decode, req.prompt_token_ids, sample.index)
            sample.prompt = req.prompt_token_ids, req.prompt_text
        return on_request

    async def _run(self, sample: _Sample, sink: Callable[[object], Awaitable[None]]) -> None:
        sample.finished = await self.gateway.generate(
            sample.raw, self.principal, sink, protocol="http",
            fill_max_tokens=self.parsed.fill_max_tokens, on_request=self._on_request(sample))

    async def _run_all(self, sink_of: Callable[[_Sample], Callable[[object], Awaitable[None]]]) -> None:
        """Every sample to its end; the first failure cancels the others and is raised."""
        if len(self.samples) == 1:
            await self._run(self.samples[0], sink_of(self.samples[0]))
            return
        tasks = [asyncio.ensure_future(self._run(s, sink_of(s))) for s in self.samples]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the whole response ----------------------------------------------------------------
    async def whole(self) -> web.Response:
        def sink_of(sample: _Sample):
            async def sink(event) -> None:
                sample.collect(event)
            return sink

        await self._run_all(sink_of)
        chosen = self.samples
        if self.parsed.best_of > self.parsed.n:
            chosen = sorted(chosen, key=lambda s: -s.cumulative_logprob)[:self.parsed.n]
        choices = []
        for rank, sample in enumerate(chosen):
            sample.builder.index = rank
            choices.append(sample.builder.choice("".join(sample.texts), sample.finished,
                                                 sample.token_ids, sample.logprobs, await self._echo(sample)))
        usage = merge_usage([s.finished.usage for s in self.samples])
        return web.json_response(chosen[0].builder.whole(choices, usage),
                                 headers={"X-Request-Id": self.response_id})

    async def _echo(self, sample: _Sample):
        if not self.parsed.echo:
            return None
        prompt_ids, prompt_text = sample.prompt
        if prompt_text is None:
            prompt_text = await asyncio.to_thread(self.gateway.backend.tokenizer.decode, prompt_ids)
        return prompt_ids, prompt_text, sample.prompt_logprobs or None

    # -- the stream ------------------------------------------------------------------------
    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp: web.StreamResponse | None = None
        lock = asyncio.Lock()          # the samples' chunks go out whole, one at a time

        async def write(chunks: list[bytes]) -> None:
            nonlocal resp
            async with lock:
                if resp is None:
                    resp = web.StreamResponse(headers={
                        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                        "X-Request-Id": self.response_id})
                    await resp.prepare(request)
                try:
                    for chunk in chunks:
                        await resp.write(chunk)
                except ConnectionError:   # the client left between two tokens
                    raise ClientGone("the client closed the connection") from None

        def sink_of(sample: _Sample):
            started = False

            async def send(event) -> None:
                nonlocal started
                builder = sample.builder
                chunks = []
                if not started and self.chat:
                    chunks.append(sse(builder.role_chunk()))
                elif not started and self.parsed.echo:
                    sample.collect(event)          # the prompt's logprobs come with the first token
                    chunks.append(sse(builder.echo_chunk(*await self._echo(sample))))
                started = True
                if isinstance(event, Finished):
                    sample.finished = event
                    chunks.append(sse(builder.finish_chunk(event)))
                else:
                    chunks.append(sse(builder.delta_chunk(event)))
                await write(chunks)
            return send

        try:
            await self._run_all(sink_of)
        except ClientGone:
            return resp
        except RouterError as exc:
            if resp is None:
                raise
            err = json.loads(response_for(exc, chat=self.chat).body)
            await _quietly(resp.write(sse(err)))
            return resp
        if self.parsed.include_usage:
            usage = merge_usage([s.finished.usage for s in self.samples])
            await _quietly(resp.write(sse(self.samples[0].builder.usage_chunk(usage))))
        await _quietly(resp.write(sse("[DONE]")))
        await _quietly(resp.write_eof())
        return resp


async def _quietly(coro) -> None:
    try:
        await coro
    except ConnectionError:
        logger.debug("client left before the end of its stream")
