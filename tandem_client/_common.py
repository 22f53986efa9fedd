"""Shared plumbing of the sync and asyncio clients: request building, response
accumulation, retry timing. Internal."""
from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from protos.tandem.v1 import generate_pb2, info_pb2
from tandem_client.errors import Cancelled, TandemError, error_for, from_rpc_error
from tandem_client.results import (
    ClusterInfo, GenerationResult, ModelInfo, PoolInfo, TokenDelta, TokenLogprob, Usage, WorkerInfo,
)

_FINISH_NAMES = {
    generate_pb2.FINISH_REASON_STOP: "stop",
    generate_pb2.FINISH_REASON_LENGTH: "length",
    generate_pb2.FINISH_REASON_ABORT: "abort",
}
_HEALTH_NAMES = {
    info_pb2.WORKER_HEALTH_STARTING: "starting",
    info_pb2.WORKER_HEALTH_HEALTHY: "healthy",
    info_pb2.WORKER_HEALTH_DRAINING: "draining",
    info_pb2.WORKER_HEALTH_UNHEALTHY: "unhealthy",
}


def build_request(prompt: str | None, token_ids: Sequence[int] | None, *,
                  max_tokens: int | None, temperature: float | None, top_p: float | None,
                  top_k: int | None, seed: int | None, stop: str | Sequence[str] | None,
                  stop_token_ids: Sequence[int] | None, ignore_eos: bool, request_id: str | None,
                  tenant: str | None, codec: str | None, deadline_ms: int | None,
                  presence_penalty: float | None = None, frequency_penalty: float | None = None,
                  repetition_penalty: float | None = None, min_tokens: int | None = None,
                  logit_bias: Mapping[int, float] | None = None,
                  logprobs: int | None = None,
                  prompt_logprobs: int | None = None) -> generate_pb2.GenerateRequest:
    """A GenerateRequest proto. Values are checked by the server, which names the field;
    only what protobuf itself cannot carry raises TypeError/ValueError here."""
    if (prompt is None) == (token_ids is None):
        raise ValueError("pass exactly one of prompt or token_ids")
    sampling = generate_pb2.SamplingParams(ignore_eos=ignore_eos)
    for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k),
                        ("max_tokens", max_tokens), ("seed", seed),
                        ("presence_penalty", presence_penalty), ("frequency_penalty", frequency_penalty),
                        ("repetition_penalty", repetition_penalty), ("min_tokens", min_tokens),
                        ("logprobs", logprobs), ("prompt_logprobs", prompt_logprobs)):
        if value is not None:
            setattr(sampling, name, value)
    if stop is not None:
        sampling.stop.extend([stop] if isinstance(stop, str) else stop)
    if stop_token_ids is not None:
        sampling.stop_token_ids.extend(stop_token_ids)
    if logit_bias:
        sampling.logit_bias.update({int(tok): float(bias) for tok, bias in logit_bias.items()})
    req = generate_pb2.GenerateRequest(sampling=sampling, request_id=request_id or "",
                                       tenant=tenant or "", codec=codec or "",
                                       deadline_ms=deadline_ms or 0)
    if prompt is not None:
        req.text = prompt
    else:
        req.token_ids.ids.extend(token_ids)
    return req


def _logprobs(entries) -> list[TokenLogprob]:
    return [TokenLogprob(lp.logprob, [(t.token_id, t.logprob) for t in lp.top]) for lp in entries]


class Accumulator:
    """Folds GenerateResponse messages into deltas and, at the end, a GenerationResult."""

    __slots__ = ("request_id", "token_ids", "text", "result", "logprobs", "prompt_logprobs")

    def __init__(self) -> None:
        self.request_id = ""
        self.token_ids: list[int] = []
        self.text = ""
        self.result: GenerationResult | None = None
        self.logprobs: list[TokenLogprob] | None = None
        self.prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def received_any(self) -> bool:
        return bool(self.request_id)

    def feed(self, msg: generate_pb2.GenerateResponse) -> TokenDelta | None:
        """The delta in ``msg`` (None when it has none); sets ``result`` on the final message."""
        self.request_id = msg.request_id
        delta = None
        if msg.HasField("delta"):
            d = msg.delta
            delta = TokenDelta(token_ids=list(d.token_ids), text=d.text, index=d.index)
            if d.logprobs:
                delta.logprobs = _logprobs(d.logprobs)
                self.logprobs = (self.logprobs or []) + delta.logprobs
            if d.prompt_logprobs:
                delta.prompt_logprobs = self.prompt_logprobs = [None, *_logprobs(d.prompt_logprobs)]
            self.token_ids += delta.token_ids
            self.text += delta.text
        if msg.HasField("finished"):
            self._finish(msg)
        return delta

    def _finish(self, msg: generate_pb2.GenerateResponse) -> None:
        f = msg.finished
        u = f.usage
        self.result = GenerationResult(
            request_id=msg.request_id, text=self.text, token_ids=self.token_ids,
            finish_reason=_FINISH_NAMES.get(f.reason, "unknown"), logprobs=self.logprobs,
            prompt_logprobs=self.prompt_logprobs,
            usage=Usage(prompt_tokens=u.prompt_tokens, cached_prompt_tokens=u.cached_prompt_tokens,
                        completion_tokens=u.completion_tokens, ttft_ms=u.ttft_ms,
                        prefill_worker=u.prefill_worker, decode_worker=u.decode_worker))

    def stream_ended(self) -> None:
        """Call at end of stream: a stream that ends without `finished` is a server fault."""
        if self.result is None:
            raise error_for(grpc.StatusCode.INTERNAL, "stream ended without a finish message")


def channel_target(target: str | Sequence[str], options: Sequence[tuple[str, Any]] = ()
                   ) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target and channel options for one router or several.

    ``target``: ``host:port``; a gRPC URI such as ``dns:///routers.example:50051`` (every
    address the name resolves to is used); or a list of ``host:port`` (names are resolved
    now). With several addresses the channel balances calls across them round-robin and
    skips the ones that fail, so a call that finds its router gone is retried (before its
    first token) on another."""
    opts = list(options)
    if isinstance(target, str):
        targets = [target]
    else:
        targets = list(target)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError("target must be a non-empty 'host:port' or a list of them")
    if len(targets) > 1 or targets[0].startswith("dns:"):
        if not any(name == "grpc.lb_policy_name" for name, _ in opts):
            opts.append(("grpc.lb_policy_name", "round_robin"))
    if isinstance(target, str):
        return target, opts
    addresses = [_resolve(t) for t in targets]
    if len(addresses) == 1:
        return addresses[0], opts
    v6 = [a for a in addresses if a.startswith("[")]
    if v6 and len(v6) != len(addresses):
        raise ValueError("mix of IPv4 and IPv6 router addresses: give one family")
    return ("ipv6:" if v6 else "ipv4:") + ",".join(addresses), opts


def _resolve(target: str) -> str:
    """``host:port`` as ``ip:port`` (``[ip]:port`` for IPv6)."""
    import ipaddress
    import socket
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"router address must be host:port, got {target!r}")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            ip = ipaddress.ip_address(socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][4][0])
        except OSError as exc:
            raise ValueError(f"cannot resolve router host {host!r}: {exc}") from None
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


@dataclass(slots=True)
class RetryPolicy:
    """Retry UNAVAILABLE failures, with exponential backoff and full jitter, within the
    call's overall deadline. One that happened after the stream began is retried only with
    ``resume``: the request is sent again with what was received (``GenerateRequest.resume``,
    to any router), and the stream goes on after it with nothing repeated or missing."""
    retries: int = 3
    backoff_base_s: float = 0.05
    backoff_max_s: float = 2.0
    resume: bool = True

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ValueError("need 0 <= backoff_base_s <= backoff_max_s")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** attempt))

    def next_delay(self, error: TandemError, attempt: int, got_tokens: bool,
                   deadline: float | None, resuming: bool = False) -> float | None:
        """The wait before retrying after ``error``, or None when it must be raised.
        ``resuming``: the failed call was a resume, which a router that has not yet noticed
        the broken stream refuses with ALREADY_EXISTS for a moment: retried too."""
        retryable = error.code is grpc.StatusCode.UNAVAILABLE or (
            resuming and error.code is grpc.StatusCode.ALREADY_EXISTS)
        if (got_tokens and not self.resume) or attempt >= self.retries or not retryable:
            return None
        wait = self.delay(attempt)
        if deadline is not None and time.monotonic() + wait >= deadline:
            return None
        return wait


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (a time.monotonic() value), never negative."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def model_info_from_proto(pb: info_pb2.ModelInfo) -> ModelInfo:
    return ModelInfo(model=pb.model, vocab_size=pb.vocab_size, max_model_len=pb.max_model_len,
                     block_size=pb.block_size, dtype=pb.dtype, num_layers=pb.num_layers,
                     num_kv_heads=pb.num_kv_heads, head_dim=pb.head_dim,
                     eos_token_id=pb.eos_token_id, codecs=list(pb.codecs),
                     default_codec=pb.default_codec, mode=pb.mode)


def cluster_info_from_proto(pb: info_pb2.ClusterInfo) -> ClusterInfo:
    pools = [PoolInfo(name=p.name, workers=[WorkerInfo(
        worker_id=w.worker_id, node=w.node, health=_HEALTH_NAMES.get(w.health, "unknown"),
        running_requests=w.running_requests, waiting_requests=w.waiting_requests,
        free_kv_blocks=w.free_kv_blocks, total_kv_blocks=w.total_kv_blocks, load=w.load,
        restarts=w.restarts, device=w.device) for w in p.workers]) for p in pb.pools]
    return ClusterInfo(mode=pb.mode, pools=pools, healthy=pb.healthy)


class StreamState:
    """What the sync and asyncio token streams share: the call, the accumulated result, the
    retry decision and cancellation. The subclasses only read (``next`` / ``await read``)."""

    def __init__(self, stub: Any, request: generate_pb2.GenerateRequest, deadline: float | None,
                 retry: RetryPolicy, metadata: Sequence[tuple[str, str]]) -> None:
        self._stub = stub
        self._request = request
        self._deadline = deadline
        self._retry = retry
        self._metadata = tuple(metadata)
        self._acc = Accumulator()
        self._call: Any = None
        self._attempt = 0
        self._cancelled = False
        self._done = False

    @property
    def result(self) -> GenerationResult | None:
        """The finished generation, once the stream is exhausted; else None."""
        return self._acc.result

    @property
    def request_id(self) -> str:
        """The id the router assigned or echoed; "" until the first message."""
        return self._acc.request_id

    def cancel(self) -> None:
        """Stop the request; the server aborts it and frees its resources."""
        if self._done:
            return
        self._cancelled = True
        call = self._call
        if call is not None:
            call.cancel()

    def _open_call(self) -> Any:
        """The current call, started if needed (raises ``Cancelled`` once cancelled)."""
        if self._cancelled:
            self._done = True
            raise cancelled_by_client()
        if self._call is None:
            self._call = self._stub.Generate(self._request, timeout=remaining(self._deadline),
                                             metadata=self._metadata)
        return self._call

    def _retry_delay(self, exc: grpc.RpcError) -> float:
        """Seconds to wait before retrying the failed call; raises when it must not retry."""
        error = from_rpc_error(exc)
        wait = None if self._cancelled else self._retry.next_delay(
            error, self._attempt, self._acc.received_any, self._deadline, self._request.HasField("resume"))
        if wait is None:
            self._done = True
            raise (cancelled_by_client() if self._cancelled else error) from None
        if self._acc.received_any:
            self._request = self._resume_request()
        self._attempt += 1
        self._call = None
        return wait

    def _resume_request(self) -> generate_pb2.GenerateRequest:
        """The request again, carrying what this stream received, under the router's id."""
        req = generate_pb2.GenerateRequest()
        req.CopyFrom(self._request)
        req.request_id = self._acc.request_id
        req.resume.SetInParent()
        del req.resume.token_ids[:]
        req.resume.token_ids.extend(self._acc.token_ids)
        req.resume.text_chars = len(self._acc.text)
        return req

    def _feed(self, msg: generate_pb2.GenerateResponse) -> TokenDelta | None:
        delta = self._acc.feed(msg)
        if self._acc.result is not None:
            self._done = True
        return delta

    def _ended(self) -> None:
        self._done = True
        self._acc.stream_ended()

    def __del__(self) -> None:
        # An abandoned stream must not keep a request running on the server.
        if getattr(self, "_call", None) is not None and not self._done:
            try:
                self._call.cancel()
            except Exception:  # the channel or loop is already gone
                pass


def cancelled_by_client() -> Cancelled:
    return Cancelled(grpc.StatusCode.CANCELLED, "cancelled by the client")
