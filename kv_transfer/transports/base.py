"""The transport plug-in point: move the frames of one KV blob from a sender to a receiver.

A transfer is a stream of *frames* (the wire format's header frame, then section frames),
named by a transfer id. The sender opens a ``SendStream``, whose ``descriptor`` is the
small, picklable-by-Ray handle the receiver needs; frames can be sent as soon as each
layer group is encoded, and the receiver iterates them as they arrive. Every transfer has
a deadline (absolute, ``time.time()`` seconds) and a size limit, and reports the bytes it
moved. Transports never look inside frames: verification is the wire format's job.
"""
from __future__ import annotations

import importlib
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from kv_transfer.errors import KVTransferTimeout, KVTransferTooLarge, UnknownTransportError

logger = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 30.0
DEFAULT_MAX_BYTES = 1 << 30



def new_transfer_id(request_id: str) -> str:
    """A transfer id of its own for each attempt to send a request's KV."""
    return f"{request_id}/{uuid.uuid4().hex[:8]}"

@dataclass(slots=True)
class TransferStats:
    """What one side of a transfer did."""
    transfer_id: str
    bytes_moved: int = 0
    frames: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class TransferLimits:
    """A deadline and a byte budget, checked as frames go by."""
    transfer_id: str
    deadline: float
    max_bytes: int

    @classmethod
    def make(cls, transfer_id: str, deadline: float | None, max_bytes: int | None,
             other_deadline: float | None = None) -> "TransferLimits":
        if not isinstance(transfer_id, str) or not transfer_id:
            raise ValueError(f"transfer_id must be a non-empty string, got {transfer_id!r}")
        limit = time.time() + DEFAULT_DEADLINE_S if deadline is None else float(deadline)
        if other_deadline is not None:
            limit = min(limit, other_deadline)
        size = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
        if size < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        return cls(transfer_id, limit, size)

    def remaining(self) -> float:
        """Seconds left; KVTransferTimeout when none are."""
        left = self.deadline - time.time()
        if left <= 0:
            raise KVTransferTimeout(f"KV transfer {self.transfer_id} missed its deadline")
        return left

    def charge(self, stats: TransferStats, nbytes: int) -> None:
        """Count ``nbytes`` more against the budget; KVTransferTooLarge past it."""
        if stats.bytes_moved + nbytes > self.max_bytes:
            raise KVTransferTooLarge(f"KV transfer {self.transfer_id} exceeds its size limit of "
                                     f"{self.max_bytes} bytes")
        stats.bytes_moved += nbytes
        stats.frames += 1


class SendStream(ABC):
    """The sending end of one transfer: frames in order, then ``close()``."""

    @property
    @abstractmethod
    def descriptor(self) -> Any:
        """The handle a receiver opens this transfer with; valid as soon as the stream is open."""

    @abstractmethod
    def send(self, frame: Any) -> None:
        """Send one frame (bytes-like, or a list of buffers forming one frame)."""

    @abstractmethod
    def close(self) -> TransferStats:
        """End the stream (no more frames); returns what was sent."""

    @abstractmethod
    def abort(self, reason: str) -> None:
        """Fail the transfer; a receiver waiting on it gets a KVTransferError with ``reason``."""

    def __enter__(self) -> "SendStream":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.abort(f"sender failed: {exc!r}")
        else:
            self.close()


class ReceiveStream(ABC):
    """The receiving end: iterate frames (bytes-like, read-only) as they arrive."""

    stats: TransferStats

    @abstractmethod
    def __iter__(self) -> Iterator[memoryview]:
        """Frames in the order they were sent; KVTransferTimeout / KVTransferTooLarge on limits."""


class KVTransport(ABC):
    """Moves KV frames between processes. Implementations register by ``name``."""

    name: ClassVar[str]

    @abstractmethod
    def open_send(self, transfer_id: str, deadline: float | None = None,
                  max_bytes: int | None = None) -> SendStream:
        """Start a transfer; send its frames through the returned stream."""

    @abstractmethod
    def open_receive(self, descriptor: Any, deadline: float | None = None,
                     max_bytes: int | None = None) -> ReceiveStream:
        """Open the transfer a sender described; iterate it for its frames."""

    def publish(self, transfer_id: str, blob: bytes, deadline: float | None = None,
                max_bytes: int | None = None) -> Any:
        """Send a finished blob as one frame; returns the descriptor for ``fetch``."""
        stream = self.open_send(transfer_id, deadline, max_bytes)
        with stream:
            stream.send(blob)
        return stream.descriptor

    def fetch(self, descriptor: Any, deadline: float | None = None,
              max_bytes: int | None = None) -> bytes | memoryview:
        """All frames of a transfer, concatenated (a zero-copy view when there is one frame)."""
        frames = list(self.open_receive(descriptor, deadline, max_bytes))
        return frames[0] if len(frames) == 1 else b"".join(frames)


_TRANSPORTS: dict[str, type[KVTransport]] = {}
_BUILT_IN = {"local": "kv_transfer.transports.local", "ray": "kv_transfer.transports.ray_transport"}


def register_transport(cls: type[KVTransport]) -> type[KVTransport]:
    """Register a transport class under ``cls.name`` (usable as a decorator)."""
    if cls.name in _TRANSPORTS and _TRANSPORTS[cls.name] is not cls:
        raise ValueError(f"transport name {cls.name!r} is already registered")
    _TRANSPORTS[cls.name] = cls
    return cls


def get_transport(name: str, **opts: Any) -> KVTransport:
    """A transport instance by registered name."""
    if name not in _TRANSPORTS and isinstance(name, str) and name in _BUILT_IN:
        importlib.import_module(_BUILT_IN[name])     # built-ins register when first used
    try:
        cls = _TRANSPORTS[name]
    except (KeyError, TypeError):
        raise UnknownTransportError(f"unknown KV transport {name!r}; available: {available_transports()}") from None
    return cls(**opts)


def available_transports() -> list[str]:
    """Names accepted by ``get_transport``, sorted (without importing a transport)."""
    return sorted(set(_BUILT_IN) | set(_TRANSPORTS))


def frame_bytes(frame: Any) -> memoryview:
    """One frame as a flat byte view: a bytes-like object, or a list of buffers (joined)."""
    if isinstance(frame, (list, tuple)):
        frame = b"".join(memoryview(b).cast("B") for b in frame)
    view = memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")
