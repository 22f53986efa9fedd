"""Typed router/backend errors and their gRPC status codes, in one place.

Backends raise these; ``router.service`` turns any of them into a gRPC status with
``status_of``. Anything else escaping a backend is a bug and becomes INTERNAL.
"""
from __future__ import annotations

import grpc

# Trailing-metadata key naming the request field an INVALID_ARGUMENT is about.
FIELD_METADATA_KEY = "tandem-field"


class RouterError(Exception):
    """Base of the router's errors. ``recoverable``: a retry elsewhere/later may succeed."""
    code = grpc.StatusCode.INTERNAL
    recoverable = False


class InvalidRequest(RouterError, ValueError):
    """The request is malformed; ``field`` is the dotted path of the offending field."""
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DuplicateRequest(RouterError):
    """A request with the same id is already in flight."""
    code = grpc.StatusCode.ALREADY_EXISTS


class NoHealthyWorker(RouterError):
    """No worker can take the request now (none healthy, or the backend is stopped)."""
    code = grpc.StatusCode.UNAVAILABLE
    recoverable = True


class WorkerFailed(RouterError):
    """A worker died or dropped the request mid-flight."""
    code = grpc.StatusCode.UNAVAILABLE
    recoverable = True


class Overloaded(RouterError):
    """Admission control refused the request (too many in flight, no KV space)."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    recoverable = True


class RequestTimedOut(RouterError):
    """The request's deadline passed before it finished."""
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class BackendFailure(RouterError):
    """The backend failed in a way a retry will not fix."""
    code = grpc.StatusCode.INTERNAL


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """(status code, details, trailing metadata) for an exception leaving a handler."""
    if isinstance(exc, InvalidRequest):
        return exc.code, str(exc), ((FIELD_METADATA_KEY, exc.field),)
    if isinstance(exc, RouterError):
        return exc.code, str(exc) or type(exc).__name__, ()
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", ()
