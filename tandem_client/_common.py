"""Shared plumbing of the sync and asyncio clients: request building, response
accumulation, retry timing. Internal."""
from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from protos.tandem.v1 import generate_pb2, info_pb2
from tandem_client.errors import TandemError, error_for
from tandem_client.results import (
    ClusterInfo, GenerationResult, ModelInfo, PoolInfo, TokenDelta, Usage, WorkerInfo,
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
                  tenant: str | None, codec: str | None,
                  deadline_ms: int | None) -> generate_pb2.GenerateRequest:
    """A GenerateRequest proto. Values are checked by the server, which names the field;
    only what protobuf itself cannot carry raises TypeError/ValueError here."""
    if (prompt is None) == (token_ids is None):
        raise ValueError("pass exactly one of prompt or token_ids")
    sampling = generate_pb2.SamplingParams(ignore_eos=ignore_eos)
    for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k),
                        ("max_tokens", max_tokens), ("seed", seed)):
        if value is not None:
            setattr(sampling, name, value)
    if stop is not None:
        sampling.stop.extend([stop] if isinstance(stop, str) else stop)
    if stop_token_ids is not None:
        sampling.stop_token_ids.extend(stop_token_ids)
    req = generate_pb2.GenerateRequest(sampling=sampling, request_id=request_id or "",
                                       tenant=tenant or "", codec=codec or "",
                                       deadline_ms=deadline_ms or 0)
    if prompt is not None:
        req.text = prompt
    else:
        req.token_ids.ids.extend(token_ids)
    return req


class Accumulator:
    """Folds GenerateResponse messages into deltas and, at the end, a GenerationResult."""

    __slots__ = ("request_id", "token_ids", "text", "result")

    def __init__(self) -> None:
        self.request_id = ""
        self.token_ids: list[int] = []
        self.text = ""
        self.result: GenerationResult | None = None

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
            finish_reason=_FINISH_NAMES.get(f.reason, "unknown"),
            usage=Usage(prompt_tokens=u.prompt_tokens, cached_prompt_tokens=u.cached_prompt_tokens,
                        completion_tokens=u.completion_tokens, ttft_ms=u.ttft_ms,
                        prefill_worker=u.prefill_worker, decode_worker=u.decode_worker))

    def stream_ended(self) -> None:
        """Call at end of stream: a stream that ends without `finished` is a server fault."""
        if self.result is None:
            raise error_for(grpc.StatusCode.INTERNAL, "stream ended without a finish message")


@dataclass(slots=True)
class RetryPolicy:
    """Retry UNAVAILABLE failures that happened before any token, with exponential
    backoff and full jitter, within the call's overall deadline."""
    retries: int = 3
    backoff_base_s: float = 0.05
    backoff_max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ValueError("need 0 <= backoff_base_s <= backoff_max_s")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** attempt))

    def next_delay(self, error: TandemError, attempt: int, got_tokens: bool,
                   deadline: float | None) -> float | None:
        """The wait before retrying after ``error``, or None when it must be raised."""
        if got_tokens or attempt >= self.retries or error.code is not grpc.StatusCode.UNAVAILABLE:
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
