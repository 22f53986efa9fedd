"""A Tandem router over gRPC, through the asyncio SDK (``tandem://host:port``)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from loadtest.errors import TargetError
from loadtest.record import RequestRecord, Status
from loadtest.spec import RequestSpec
from loadtest.targets.base import DeltaTimer, Target, TargetInfo, TargetOptions, register_target

logger = logging.getLogger(__name__)


def status_of(error: Exception) -> Status:
    """The record status for an SDK error."""
    from tandem_client import errors
    mapping: list[tuple[type[Exception], Status]] = [
        (errors.ResourceExhausted, Status.REFUSED), (errors.InvalidArgument, Status.INVALID),
        (errors.Unavailable, Status.UNAVAILABLE), (errors.DeadlineExceeded, Status.TIMEOUT),
        (errors.Cancelled, Status.CANCELLED)]
    for cls, status in mapping:
        if isinstance(error, cls):
            return status
    return Status.ERROR


@register_target("tandem", "grpc")
class TandemTarget(Target):
    """Streams every request with ``AsyncTandemClient.stream(token_ids=...)``."""

    kind = "tandem"

    def __init__(self, url: str, options: TargetOptions) -> None:
        super().__init__(url, options)
        self.address = urlsplit(url).netloc
        self._client: Any = None

    async def open(self) -> TargetInfo:
        from tandem_client import AsyncTandemClient, TandemError
        self._client = AsyncTandemClient(self.address, timeout=self.options.request_timeout_s,
                                         retries=self.options.retries)
        try:
            wait = self.options.connect_timeout_s
            await self._client.wait_ready(timeout=wait)
            model = await self._client.model_info(timeout=wait)
            cluster = await self._client.cluster_info(timeout=wait)
        except TandemError as exc:
            await self.close()
            raise TargetError(f"{self.url}: {exc}") from None
        max_len = self.options.max_model_len or model.max_model_len
        return TargetInfo(model=model.model, vocab_size=model.vocab_size, max_model_len=max_len,
                          block_size=model.block_size, eos_token_id=model.eos_token_id,
                          details={"model_info": asdict(model), "cluster": asdict(cluster)})

    async def execute(self, spec: RequestSpec, record: RequestRecord,
                      clock: Callable[[], float]) -> None:
        from tandem_client import TandemError
        timer = DeltaTimer(record, clock)
        stream = self._client.stream(token_ids=spec.token_ids, max_tokens=spec.max_tokens,
                                     temperature=self.options.temperature,
                                     ignore_eos=self.options.ignore_eos,
                                     request_id=record.request_id,
                                     timeout=self.options.request_timeout_s)
        try:
            async with stream:
                async for delta in stream:
                    timer.delta(len(delta.token_ids), delta.token_ids)
        except TandemError as exc:
            record.status, record.error = status_of(exc), str(exc)
            return
        result = stream.result
        if result is None:
            record.status, record.error = Status.ERROR, "stream ended without a result"
            return
        usage = result.usage
        record.prompt_tokens = usage.prompt_tokens
        record.cached_prompt_tokens = usage.cached_prompt_tokens
        record.completion_tokens = usage.completion_tokens or record.completion_tokens
        record.server_ttft_ms = usage.ttft_ms
        record.prefill_worker, record.decode_worker = usage.prefill_worker, usage.decode_worker
        record.finish_reason = result.finish_reason
        if result.finish_reason == "abort":
            record.status, record.error = Status.ABORTED, "the server aborted the request"
        else:
            record.status = Status.OK

    async def scrape_info(self) -> dict[str, Any]:
        from tandem_client import TandemError
        try:
            return {"cluster": asdict(await self._client.cluster_info(timeout=5.0))}
        except TandemError as exc:
            return {"cluster_error": str(exc)}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
