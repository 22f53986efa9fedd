"""asyncio client: ``await AsyncTandemClient.generate(...)``, ``async for d in client.stream(...)``."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc

from protos.tandem.v1 import info_pb2, tandem_service_pb2_grpc
from tandem_client._common import (
    RetryPolicy, StreamState, build_request, cancelled_by_client, channel_target, cluster_info_from_proto,
    model_info_from_proto,
    remaining,
)
from tandem_client.client import _DEFAULT
from tandem_client.errors import Unavailable, from_rpc_error
from tandem_client.results import ClusterInfo, GenerationResult, ModelInfo, TokenDelta


class AsyncTokenStream(StreamState, AsyncIterator[TokenDelta]):
    """Deltas of one generation, as they arrive; ``result`` is set after the last one.

    ``cancel()`` or leaving an ``async with`` block stops the request on the server; a
    task awaiting the next delta then gets ``Cancelled``. Cancelling the consuming task
    cancels the RPC too (and raises ``asyncio.CancelledError`` as usual).
    """

    def __aiter__(self) -> AsyncTokenStream:
        return self

    async def __anext__(self) -> TokenDelta:
        while True:
            if self._done:
                raise StopAsyncIteration
            call = self._open_call()
            try:
                msg = await call.read()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                self._done = True
                if self._cancelled and not (task and task.cancelling()):
                    raise cancelled_by_client() from None
                call.cancel()
                raise
            except grpc.RpcError as exc:
                await asyncio.sleep(self._retry_delay(exc))
                continue
            if msg is grpc.aio.EOF:
                self._ended()
                raise StopAsyncIteration
            delta = self._feed(msg)
            if delta is not None:
                return delta

    async def aclose(self) -> None:
        """Cancel unless already finished."""
        self.cancel()

    async def __aenter__(self) -> AsyncTokenStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()


class AsyncTandemClient:
    """asyncio client for a Tandem router; create it inside a running event loop.

    Same arguments as ``TandemClient``: ``target``, ``timeout`` (overall seconds per call,
    retries included; None: no limit), ``retries`` (of UNAVAILABLE), ``resume`` (a broken
    stream goes on through a router), ``credentials``, ``metadata``, ``options``.
    """

    def __init__(self, target: str | Sequence[str], *, timeout: float | None = 60.0, retries: int = 3,
                 backoff_base_s: float = 0.05, backoff_max_s: float = 2.0, resume: bool = True,
                 credentials: grpc.ChannelCredentials | None = None,
                 metadata: Sequence[tuple[str, str]] = (),
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self.timeout = timeout
        self.retry = RetryPolicy(retries, backoff_base_s, backoff_max_s, resume)
        self.metadata = tuple(metadata)
        address, opts = channel_target(target, options)
        self._channel = (grpc.aio.secure_channel(address, credentials, options=opts)
                         if credentials else grpc.aio.insecure_channel(address, options=opts))
        self._stub = tandem_service_pb2_grpc.TandemStub(self._channel)

    def stream(self, prompt: str | None = None, *, token_ids: Sequence[int] | None = None,
               max_tokens: int | None = None, temperature: float | None = None,
               top_p: float | None = None, top_k: int | None = None, seed: int | None = None,
               stop: str | Sequence[str] | None = None,
               stop_token_ids: Sequence[int] | None = None, ignore_eos: bool = False,
               presence_penalty: float | None = None, frequency_penalty: float | None = None,
               repetition_penalty: float | None = None, min_tokens: int | None = None,
               logit_bias: Mapping[int, float] | None = None, logprobs: int | None = None,
               prompt_logprobs: int | None = None,
               request_id: str | None = None, tenant: str | None = None,
               codec: str | None = None, timeout: float | None = _DEFAULT) -> AsyncTokenStream:
        """Start a generation (lazily, at the first ``__anext__``); see ``TandemClient.stream``."""
        request = build_request(prompt, token_ids, max_tokens=max_tokens, temperature=temperature,
                                top_p=top_p, top_k=top_k, seed=seed, stop=stop,
                                stop_token_ids=stop_token_ids, ignore_eos=ignore_eos,
                                presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                                repetition_penalty=repetition_penalty, min_tokens=min_tokens, logit_bias=logit_bias,
                                logprobs=logprobs,
                                prompt_logprobs=prompt_logprobs,
                                request_id=request_id, tenant=tenant, codec=codec, deadline_ms=None)
        return AsyncTokenStream(self._stub, request, self._deadline(timeout), self.retry,
                                self.metadata)

    async def generate(self, prompt: str | None = None, *, token_ids: Sequence[int] | None = None,
                       max_tokens: int | None = None, temperature: float | None = None,
                       top_p: float | None = None, top_k: int | None = None,
                       seed: int | None = None, stop: str | Sequence[str] | None = None,
                       stop_token_ids: Sequence[int] | None = None, ignore_eos: bool = False,
                       presence_penalty: float | None = None, frequency_penalty: float | None = None,
                       repetition_penalty: float | None = None, min_tokens: int | None = None,
                       logit_bias: Mapping[int, float] | None = None, logprobs: int | None = None,
                       prompt_logprobs: int | None = None,
                       request_id: str | None = None, tenant: str | None = None,
                       codec: str | None = None,
                       timeout: float | None = _DEFAULT) -> GenerationResult:
        """Generate and return the whole result (same arguments as ``stream``)."""
        async with self.stream(prompt, token_ids=token_ids, max_tokens=max_tokens,
                               temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                               stop=stop, stop_token_ids=stop_token_ids, ignore_eos=ignore_eos,
                               presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                               repetition_penalty=repetition_penalty, min_tokens=min_tokens, logit_bias=logit_bias,
                               logprobs=logprobs,
                               prompt_logprobs=prompt_logprobs,
                               request_id=request_id, tenant=tenant, codec=codec,
                               timeout=timeout) as tokens:
            async for _ in tokens:
                pass
            result = tokens.result
        if result is None:  # the stream raises before this can happen
            raise RuntimeError("stream finished without a result")
        return result

    async def model_info(self, timeout: float | None = _DEFAULT) -> ModelInfo:
        """The served model: vocabulary, context length, KV shape, codecs."""
        pb = await self._unary(self._stub.GetModelInfo, info_pb2.GetModelInfoRequest(), timeout)
        return model_info_from_proto(pb)

    async def cluster_info(self, timeout: float | None = _DEFAULT) -> ClusterInfo:
        """Pools, workers, their health and load."""
        pb = await self._unary(self._stub.GetClusterInfo, info_pb2.GetClusterInfoRequest(), timeout)
        return cluster_info_from_proto(pb)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channel connects; raise Unavailable after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise Unavailable(grpc.StatusCode.UNAVAILABLE,
                              f"{self.target} not ready after {timeout} s") from None

    async def close(self) -> None:
        """Close the channel; streams still open are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncTandemClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = self.timeout if timeout is _DEFAULT else timeout
        return None if timeout is None else time.monotonic() + timeout

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            try:
                return await method(request, timeout=remaining(deadline), metadata=self.metadata)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                wait = self.retry.next_delay(error, attempt, False, deadline)
                if wait is None:
                    raise error from None
                attempt += 1
                await asyncio.sleep(wait)
