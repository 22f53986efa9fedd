"""``local``: frames handed over inside one process (tests, and the colocated mode where a
prefill and a decode engine share a process). Zero-copy: the receiver gets the sender's
buffers. Channels are shared by every ``LocalTransport`` of the process, keyed by id."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from kv_transfer.errors import KVTransferFailed, KVTransferNotFound
from kv_transfer.transports.base import (KVTransport, ReceiveStream, SendStream, TransferLimits,
                                         TransferStats, frame_bytes, register_transport)

logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class LocalDescriptor:
    """Names an in-process transfer."""
    transfer_id: str
    deadline: float
    transport: str = "local"


@dataclass(slots=True)
class _Channel:
    limits: TransferLimits
    frames: deque = field(default_factory=deque)
    closed: bool = False
    error: str | None = None
    receiver_attached: bool = False


_LOCK = threading.Condition()
_CHANNELS: dict[str, _Channel] = {}


def _sweep_expired(now: float) -> None:
    """Drop channels nobody collected before their deadline (called under _LOCK)."""
    for tid in [t for t, ch in _CHANNELS.items() if ch.limits.deadline < now and not ch.receiver_attached]:
        logger.warning("local KV transfer %s expired uncollected", tid)
        del _CHANNELS[tid]


class _LocalSend(SendStream):
    def __init__(self, limits: TransferLimits):
        self._limits = limits
        self._stats = TransferStats(limits.transfer_id)
        self._t0 = time.perf_counter()
        with _LOCK:
            _sweep_expired(time.time())
            if limits.transfer_id in _CHANNELS:
                raise ValueError(f"KV transfer {limits.transfer_id!r} is already open")
            self._channel = _CHANNELS[limits.transfer_id] = _Channel(limits)

    @property
    def descriptor(self) -> LocalDescriptor:
        return LocalDescriptor(self._limits.transfer_id, self._limits.deadline)

    def send(self, frame) -> None:
        view = frame_bytes(frame)
        self._limits.remaining()
        self._limits.charge(self._stats, view.nbytes)
        with _LOCK:
            if self._channel.closed:
                raise ValueError("send() after close() or abort()")
            self._channel.frames.append(view)
            _LOCK.notify_all()

    def close(self) -> TransferStats:
        with _LOCK:
            self._channel.closed = True
            _LOCK.notify_all()
        self._stats.seconds = time.perf_counter() - self._t0
        return self._stats

    def abort(self, reason: str) -> None:
        with _LOCK:
            self._channel.closed, self._channel.error = True, reason
            _LOCK.notify_all()


class _LocalReceive(ReceiveStream):
    def __init__(self, descriptor: LocalDescriptor, limits: TransferLimits):
        self._limits = limits
        self.stats = TransferStats(limits.transfer_id)
        with _LOCK:
            channel = _CHANNELS.get(descriptor.transfer_id)
            if channel is None or channel.receiver_attached:
                raise KVTransferNotFound(f"no local KV transfer {descriptor.transfer_id!r} "
                                         "(another process's, already received, or expired)")
            channel.receiver_attached = True
            self._channel = channel

    def __iter__(self) -> Iterator[memoryview]:
        t0 = time.perf_counter()
        try:
            while True:
                with _LOCK:
                    while not self._channel.frames and not self._channel.closed:
                        _LOCK.wait(timeout=self._limits.remaining())
                    if self._channel.error is not None:
                        raise KVTransferFailed(f"KV transfer {self._limits.transfer_id} failed: "
                                              f"{self._channel.error}")
                    if not self._channel.frames:
                        return
                    frame = self._channel.frames.popleft()
                self._limits.charge(self.stats, frame.nbytes)
                self.stats.seconds = time.perf_counter() - t0
                yield frame
        finally:
            with _LOCK:
                if _CHANNELS.get(self._limits.transfer_id) is self._channel:
                    del _CHANNELS[self._limits.transfer_id]


@register_transport
class LocalTransport(KVTransport):
    """In-process transport; a descriptor is only valid inside the process that made it."""

    name = "local"

    def open_send(self, transfer_id: str, deadline: float | None = None,
                  max_bytes: int | None = None) -> SendStream:
        return _LocalSend(TransferLimits.make(transfer_id, deadline, max_bytes))

    def open_receive(self, descriptor: LocalDescriptor, deadline: float | None = None,
                     max_bytes: int | None = None) -> ReceiveStream:
        if not isinstance(descriptor, LocalDescriptor):
            raise ValueError(f"the local transport cannot open a {type(descriptor).__name__}")
        limits = TransferLimits.make(descriptor.transfer_id, deadline, max_bytes, descriptor.deadline)
        return _LocalReceive(descriptor, limits)


def pending_transfers() -> int:
    """How many local transfers are open (a leak check for tests)."""
    with _LOCK:
        return len(_CHANNELS)
