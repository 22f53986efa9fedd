"""Blocking client: ``TandemClient.generate`` returns the whole result, ``stream`` yields deltas."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from protos.tandem.v1 import info_pb2, tandem_service_pb2_grpc
from tandem_client._common import (
    RetryPolicy, StreamState, build_request, channel_target, cluster_info_from_proto,
    model_info_from_proto,
    remaining,
)
from tandem_client.errors import Unavailable, from_rpc_error
from tandem_client.results import ClusterInfo, GenerationResult, ModelInfo, TokenDelta

_DEFAULT: Any = object()   # "use the client's timeout"
T = TypeVar("T")


class TokenStream(StreamState, Iterator[TokenDelta]):
    """Deltas of one generation, as they arrive. After the last one, ``result`` holds the
    GenerationResult. ``cancel()`` (from any thread) or leaving a ``with`` block stops the
    request on the server; a consumer blocked in ``next()`` then gets ``Cancelled``.
    """

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> TokenDelta:
        while True:
            if self._done:
                raise StopIteration
            call = self._open_call()
            try:
                msg = next(call)
            except StopIteration:
                self._ended()
                raise
            except grpc.RpcError as exc:
                time.sleep(self._retry_delay(exc))
                continue
            delta = self._feed(msg)
            if delta is not None:
                return delta

    def close(self) -> None:
        """Cancel unless already finished."""
        self.cancel()

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TandemClient:
    """Blocking client for a Tandem router.

    Args:
        target: ``host:port`` of the router, a gRPC URI (``dns:///name:port``: every address
            it resolves to), or a list of ``host:port``: calls are spread round-robin over
            several routers and one that fails is skipped (``_common.channel_target``).
        timeout: default overall seconds per call, retries included (None: no limit; the
            router still applies its own request timeout).
        retries: retries of UNAVAILABLE failures (a router that is gone).
        resume: a stream that breaks after it began (its router died) is sent again, with
            what it received, to a router (another one, with several targets): it goes on
            after the last delta received, nothing repeated or missing. False: such a
            failure is raised.
        credentials: ``grpc.ChannelCredentials`` for TLS; None for a plaintext channel.
        metadata: extra metadata sent with every call (e.g. an authorization header).
        options: extra gRPC channel options.
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
        self._channel = (grpc.secure_channel(address, credentials, options=opts)
                         if credentials else grpc.insecure_channel(address, options=opts))
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
               codec: str | None = None, timeout: float | None = _DEFAULT) -> TokenStream:
        """Start a generation and return a TokenStream of its deltas.

        Pass exactly one of ``prompt`` (text, tokenized by the router) or ``token_ids``.
        Unset sampling values take the server's defaults. Errors surface while iterating
        as TandemError subclasses (InvalidArgument names the field in ``.field``).
        """
        request = build_request(prompt, token_ids, max_tokens=max_tokens, temperature=temperature,
                                top_p=top_p, top_k=top_k, seed=seed, stop=stop,
                                stop_token_ids=stop_token_ids, ignore_eos=ignore_eos,
                                presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                                repetition_penalty=repetition_penalty, min_tokens=min_tokens, logit_bias=logit_bias,
                                logprobs=logprobs,
                                prompt_logprobs=prompt_logprobs,
                                request_id=request_id, tenant=tenant, codec=codec, deadline_ms=None)
        return TokenStream(self._stub, request, self._deadline(timeout), self.retry, self.metadata)

    def generate(self, prompt: str | None = None, *, token_ids: Sequence[int] | None = None,
                 max_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, seed: int | None = None,
                 stop: str | Sequence[str] | None = None,
                 stop_token_ids: Sequence[int] | None = None, ignore_eos: bool = False,
                 presence_penalty: float | None = None, frequency_penalty: float | None = None,
                 repetition_penalty: float | None = None, min_tokens: int | None = None,
                 logit_bias: Mapping[int, float] | None = None, logprobs: int | None = None,
                 prompt_logprobs: int | None = None,
                 request_id: str | None = None, tenant: str | None = None,
                 codec: str | None = None, timeout: float | None = _DEFAULT) -> GenerationResult:
        """Generate and return the whole result (same arguments as ``stream``)."""
        with self.stream(prompt, token_ids=token_ids, max_tokens=max_tokens,
                         temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                         stop=stop, stop_token_ids=stop_token_ids, ignore_eos=ignore_eos,
                         presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                         repetition_penalty=repetition_penalty, min_tokens=min_tokens, logit_bias=logit_bias,
                         logprobs=logprobs,
                         prompt_logprobs=prompt_logprobs,
                         request_id=request_id, tenant=tenant, codec=codec,
                         timeout=timeout) as tokens:
            for _ in tokens:
                pass
            result = tokens.result
        if result is None:  # the stream raises before this can happen
            raise RuntimeError("stream finished without a result")
        return result

    def model_info(self, timeout: float | None = _DEFAULT) -> ModelInfo:
        """The served model: vocabulary, context length, KV shape, codecs."""
        pb = self._unary(self._stub.GetModelInfo, info_pb2.GetModelInfoRequest(), timeout)
        return model_info_from_proto(pb)

    def cluster_info(self, timeout: float | None = _DEFAULT) -> ClusterInfo:
        """Pools, workers, their health and load."""
        pb = self._unary(self._stub.GetClusterInfo, info_pb2.GetClusterInfoRequest(), timeout)
        return cluster_info_from_proto(pb)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects; raise Unavailable after ``timeout`` seconds."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise Unavailable(grpc.StatusCode.UNAVAILABLE,
                              f"{self.target} not ready after {timeout} s") from None

    def close(self) -> None:
        """Close the channel; streams still open are cancelled."""
        self._channel.close()

    def __enter__(self) -> TandemClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = self.timeout if timeout is _DEFAULT else timeout
        return None if timeout is None else time.monotonic() + timeout

    def _unary(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            try:
                return method(request, timeout=remaining(deadline), metadata=self.metadata)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                wait = self.retry.next_delay(error, attempt, False, deadline)
                if wait is None:
                    raise error from None
                attempt += 1
                time.sleep(wait)
