"""Conversion between the ``tandem.v1`` protobuf messages and ``router.messages``.

The only module of the router that knows protobuf field names. Incoming requests become a
``RawRequest`` (structure only, values unchecked; unset optionals are None) for
``router.validation``; outgoing dataclasses become protos.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from protos.tandem.v1 import generate_pb2, info_pb2
from router.messages import (
    ClusterInfo, Finished, FinishReason, ModelInfo, TokenDelta, WorkerHealth,
)

_FINISH_TO_PB = {
    FinishReason.STOP: generate_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: generate_pb2.FINISH_REASON_LENGTH,
    FinishReason.ABORT: generate_pb2.FINISH_REASON_ABORT,
}
_HEALTH_TO_PB = {
    WorkerHealth.STARTING: info_pb2.WORKER_HEALTH_STARTING,
    WorkerHealth.HEALTHY: info_pb2.WORKER_HEALTH_HEALTHY,
    WorkerHealth.DRAINING: info_pb2.WORKER_HEALTH_DRAINING,
    WorkerHealth.UNHEALTHY: info_pb2.WORKER_HEALTH_UNHEALTHY,
}


@dataclass(slots=True)
class RawRequest:
    """A GenerateRequest as received: nothing checked yet, unset optionals are None."""
    prompt_text: str | None = None
    prompt_token_ids: list[int] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    request_id: str = ""
    tenant: str = ""
    codec: str = ""
    deadline_ms: int = 0
    fork_group: str = ""              # set by the router itself (n > 1), never by a client
    fork_size: int = 1
    resume_token_ids: list[int] | None = None   # a broken stream's tokens (Resume); None: new
    resume_text_chars: int = 0


def raw_request_from_proto(pb: generate_pb2.GenerateRequest) -> RawRequest:
    """Copy a GenerateRequest proto into a RawRequest (no validation)."""
    s = pb.sampling
    raw = RawRequest(
        temperature=s.temperature if s.HasField("temperature") else None,
        top_p=s.top_p if s.HasField("top_p") else None,
        top_k=s.top_k if s.HasField("top_k") else None,
        max_tokens=s.max_tokens if s.HasField("max_tokens") else None,
        seed=s.seed if s.HasField("seed") else None,
        stop=list(s.stop),
        stop_token_ids=list(s.stop_token_ids),
        ignore_eos=s.ignore_eos,
        presence_penalty=s.presence_penalty if s.HasField("presence_penalty") else None,
        frequency_penalty=s.frequency_penalty if s.HasField("frequency_penalty") else None,
        repetition_penalty=s.repetition_penalty if s.HasField("repetition_penalty") else None,
        min_tokens=s.min_tokens if s.HasField("min_tokens") else None,
        logit_bias=dict(s.logit_bias),
        logprobs=s.logprobs if s.HasField("logprobs") else None,
        prompt_logprobs=s.prompt_logprobs if s.HasField("prompt_logprobs") else None,
        request_id=pb.request_id,
        tenant=pb.tenant,
        codec=pb.codec,
        deadline_ms=pb.deadline_ms,
    )
    if pb.HasField("resume"):
        raw.resume_token_ids = list(pb.resume.token_ids)
        raw.resume_text_chars = pb.resume.text_chars
    which = pb.WhichOneof("prompt")
    if which == "text":
        raw.prompt_text = pb.text
    elif which == "token_ids":
        raw.prompt_token_ids = list(pb.token_ids.ids)
    return raw


def event_to_proto(request_id: str, event: TokenDelta | Finished) -> generate_pb2.GenerateResponse:
    """One backend event as a GenerateResponse stream message."""
    if isinstance(event, TokenDelta):
        return generate_pb2.GenerateResponse(request_id=request_id, delta=_delta_to_proto(event))
    u = event.usage
    d = event.delta
    return generate_pb2.GenerateResponse(
        request_id=request_id,
        delta=None if d is None else _delta_to_proto(d),
        finished=generate_pb2.Finished(
            reason=_FINISH_TO_PB[FinishReason(event.reason)],
            usage=generate_pb2.Usage(
                prompt_tokens=u.prompt_tokens, cached_prompt_tokens=u.cached_prompt_tokens,
                completion_tokens=u.completion_tokens, ttft_ms=u.ttft_ms,
                prefill_worker=u.prefill_worker, decode_worker=u.decode_worker)))


def _logprobs_to_proto(entries) -> list[generate_pb2.TokenLogprob]:
    return [generate_pb2.TokenLogprob(
                logprob=lp, top=[generate_pb2.TopLogprob(token_id=t, logprob=v) for t, v in top])
            for lp, top in entries or ()]


def _delta_to_proto(d: TokenDelta) -> generate_pb2.TokenDelta:
    return generate_pb2.TokenDelta(token_ids=d.token_ids, text=d.text, index=d.index,
                                   logprobs=_logprobs_to_proto(d.logprobs),
                                   prompt_logprobs=_logprobs_to_proto((d.prompt_logprobs or [None])[1:]))


def model_info_to_proto(info: ModelInfo) -> info_pb2.ModelInfo:
    return info_pb2.ModelInfo(
        model=info.model, vocab_size=info.vocab_size, max_model_len=info.max_model_len,
        block_size=info.block_size, dtype=info.dtype, num_layers=info.num_layers,
        num_kv_heads=info.num_kv_heads, head_dim=info.head_dim,
        eos_token_id=info.eos_token_id or 0, codecs=info.codecs,
        default_codec=info.default_codec, mode=info.mode)


def cluster_info_to_proto(info: ClusterInfo) -> info_pb2.ClusterInfo:
    pools = []
    for pool in info.pools:
        workers = [info_pb2.WorkerInfo(
            worker_id=w.worker_id, node=w.node, health=_HEALTH_TO_PB[WorkerHealth(w.health)],
            running_requests=w.running_requests, waiting_requests=w.waiting_requests,
            free_kv_blocks=w.free_kv_blocks, total_kv_blocks=w.total_kv_blocks,
            load=w.load, restarts=w.restarts, device=w.device) for w in pool.workers]
        pools.append(info_pb2.PoolInfo(name=pool.name, workers=workers))
    return info_pb2.ClusterInfo(mode=info.mode, pools=pools, healthy=info.healthy)
