"""Any OpenAI-compatible server over HTTP: ``POST /v1/completions`` with ``stream: true``.

Prompts are sent as token-id lists (``"prompt": [ids]``, which vLLM, SGLang and the
OpenAI API accept) so lengths are exact. Usage comes from the final chunk
(``stream_options.include_usage``), cached tokens from ``usage.prompt_tokens_details``.
Each SSE chunk with a choice counts as one token (as vLLM streams: one chunk per step,
sometimes with empty text), unless it carries ``token_ids``; an empty chunk that only
carries a ``finish_reason`` is not a token. ``usage.completion_tokens`` wins at the end.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp

from loadtest.errors import TargetError
from loadtest.record import RequestRecord, Status
from loadtest.spec import RequestSpec
from loadtest.targets.base import DeltaTimer, Target, TargetInfo, TargetOptions, register_target

_HTTP_STATUS = {429: Status.REFUSED, 400: Status.INVALID, 413: Status.INVALID,
                422: Status.INVALID, 404: Status.INVALID, 408: Status.TIMEOUT,
                504: Status.TIMEOUT, 502: Status.UNAVAILABLE, 503: Status.UNAVAILABLE}


@register_target("http", "https")
class OpenAITarget(Target):
    """Streams ``/v1/completions``; the vocabulary size and context length are
    ``options.vocab_size`` and ``options.max_model_len`` when given, else what ``/v1/models``
    states (Tandem's router does; a server that does not needs the options)."""

    kind = "openai"

    def __init__(self, url: str, options: TargetOptions) -> None:
        super().__init__(url, options)
        self.base = url.rstrip("/").removesuffix("/v1")
        self._session: aiohttp.ClientSession | None = None
        self.model = options.model or ""

    async def open(self) -> TargetInfo:
        connector = aiohttp.TCPConnector(limit=0)   # the runner bounds concurrency itself
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        try:
            async with self._session.get(f"{self.base}/v1/models",
                                         timeout=aiohttp.ClientTimeout(
                                             total=self.options.connect_timeout_s)) as resp:
                if resp.status != 200:
                    raise TargetError(f"{self.url}: GET /v1/models answered {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            await self.close()
            raise TargetError(f"{self.url}: cannot list models: {exc}") from None
        except TargetError:
            await self.close()
            raise
        models = body.get("data") if isinstance(body, dict) else None
        if not models:
            await self.close()
            raise TargetError(f"{self.url}: /v1/models lists no model")
        entry = next((m for m in models if m.get("id") == self.model), None) if self.model \
            else models[0]
        if entry is None:
            await self.close()
            raise TargetError(f"{self.url}: model {self.model!r} is not served; served: "
                              f"{', '.join(str(m.get('id')) for m in models)}")
        self.model = str(entry.get("id"))
        vocab = self.options.vocab_size or entry.get("vocab_size")
        max_len = self.options.max_model_len or entry.get("max_model_len")
        if not vocab or not max_len:
            await self.close()
            raise TargetError(f"{self.url}: the server does not state the model's "
                              f"{'vocabulary size' if not vocab else 'context length'}: pass "
                              f"{'--vocab-size' if not vocab else '--max-model-len'}")
        return TargetInfo(model=self.model, vocab_size=int(vocab), max_model_len=int(max_len),
                          details={"model_entry": entry})

    async def execute(self, spec: RequestSpec, record: RequestRecord,
                      clock: Callable[[], float]) -> None:
        if self._session is None:
            raise TargetError("target not opened")
        payload = {"model": self.model, "prompt": spec.token_ids, "max_tokens": spec.max_tokens,
                   "temperature": self.options.temperature, "stream": True,
                   "stream_options": {"include_usage": True},
                   "ignore_eos": self.options.ignore_eos}
        timer = DeltaTimer(record, clock)
        usage: dict[str, Any] | None = None
        try:
            async with self._session.post(f"{self.base}/v1/completions", json=payload,
                                          headers={"X-Request-Id": record.request_id}) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    record.status = _HTTP_STATUS.get(resp.status, Status.ERROR)
                    record.error = f"HTTP {resp.status}: {text}"
                    return
                async for raw in resp.content:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue            # blank separators, comments, event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        record.status, record.error = Status.ERROR, str(chunk["error"])[:300]
                        return
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        ids = choice.get("token_ids")
                        if ids or choice.get("text") or ("text" in choice
                                                         and not choice.get("finish_reason")):
                            timer.delta(len(ids) if ids else 1, ids)
                        if choice.get("finish_reason"):
                            record.finish_reason = str(choice["finish_reason"])
        except aiohttp.ClientConnectionError as exc:
            record.status, record.error = Status.UNAVAILABLE, f"{type(exc).__name__}: {exc}"
            return
        except (aiohttp.ClientError, json.JSONDecodeError, UnicodeError) as exc:
            record.status, record.error = Status.ERROR, f"{type(exc).__name__}: {exc}"
            return
        if usage:
            record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            record.completion_tokens = int(usage.get("completion_tokens")
                                           or record.completion_tokens)
            details = usage.get("prompt_tokens_details") or {}
            record.cached_prompt_tokens = int(details.get("cached_tokens") or 0)
        if record.first_token_s is None and record.completion_tokens == 0:
            record.status, record.error = Status.ERROR, "the stream produced no tokens"
        elif record.finish_reason == "abort":
            record.status, record.error = Status.ABORTED, "the server aborted the request"
        else:
            record.status = Status.OK

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
