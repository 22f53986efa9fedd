"""Typed SDK exceptions, one per gRPC status a caller is likely to handle."""
from __future__ import annotations

import grpc

FIELD_METADATA_KEY = "tandem-field"   # set by the router on INVALID_ARGUMENT


class TandemError(Exception):
    """A failed call. ``code`` is the gRPC status code, ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str,
                 trailing_metadata: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


class InvalidArgument(TandemError):
    """The request was rejected; ``field`` is the dotted path of the bad field, if known."""

    @property
    def field(self) -> str | None:
        for key, value in self.trailing_metadata:
            if key == FIELD_METADATA_KEY:
                return value
        return None


class Unavailable(TandemError):
    """No server or no healthy worker; the client already retried with backoff."""


class DeadlineExceeded(TandemError):
    """The call's timeout passed."""


class ResourceExhausted(TandemError):
    """The router refused admission (overloaded); retry later."""


class Unauthenticated(TandemError):
    """Missing or bad credentials."""


class PermissionDenied(TandemError):
    """Credentials are valid but not allowed to do this."""


class AlreadyExists(TandemError):
    """A request with the same request_id is already in flight."""


class Cancelled(TandemError):
    """The call was cancelled (by ``cancel()`` or by the server)."""


_BY_CODE: dict[grpc.StatusCode, type[TandemError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def error_for(code: grpc.StatusCode, details: str,
              trailing_metadata: tuple[tuple[str, str], ...] = ()) -> TandemError:
    """The TandemError subclass for ``code``."""
    return _BY_CODE.get(code, TandemError)(code, details, trailing_metadata)


def from_rpc_error(exc: grpc.RpcError) -> TandemError:
    """Convert a grpc.RpcError (sync or aio call) into a TandemError."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    pairs = tuple((m.key, m.value) if hasattr(m, "key") else tuple(m) for m in (trailing or ()))
    return error_for(code or grpc.StatusCode.UNKNOWN, details, pairs)
