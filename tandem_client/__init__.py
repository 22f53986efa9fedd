"""Tandem client SDK: talk to a Tandem router over gRPC. Needs only grpcio and protobuf.

    from tandem_client import TandemClient
    with TandemClient("127.0.0.1:50051") as client:
        print(client.generate("Once upon a time", max_tokens=32).text)

See ``tandem_client/README.md``.
"""
from tandem_client.aio import AsyncTandemClient, AsyncTokenStream
from tandem_client.client import TandemClient, TokenStream
from tandem_client.errors import (
    AlreadyExists, Cancelled, DeadlineExceeded, InvalidArgument, PermissionDenied,
    ResourceExhausted, TandemError, Unauthenticated, Unavailable,
)
from tandem_client.results import (
    ClusterInfo, GenerationResult, ModelInfo, PoolInfo, TokenDelta, TokenLogprob, Usage, WorkerInfo,
)

__all__ = [
    "AlreadyExists", "AsyncTandemClient", "AsyncTokenStream", "Cancelled", "ClusterInfo",
    "DeadlineExceeded", "GenerationResult", "InvalidArgument", "ModelInfo", "PermissionDenied",
    "PoolInfo", "ResourceExhausted", "TandemClient", "TandemError", "TokenDelta", "TokenLogprob", "TokenStream",
    "Unauthenticated", "Unavailable", "Usage", "WorkerInfo",
]
