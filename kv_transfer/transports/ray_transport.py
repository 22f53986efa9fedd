"""``ray``: frames through Ray's shared-memory object store, as numpy uint8 buffers.

Each frame is ``ray.put`` as a numpy array (one copy into the store); a receiver on the
same node ``ray.get``s it zero-copy as a read-only array, across nodes Ray moves it once.
Two modes:

* complete (default): frames are held until ``close()``, then put as ONE object (a list of
  numpy arrays: one copy into the store, one IPC; a per-frame put costs ~1 ms of plasma
  round trips here, which would dominate). The descriptor, a small dataclass holding that
  ObjectRef, travels through actor calls and the router like any value. Frames handed to
  ``send`` must not be mutated before ``close()``.
* streaming (``get_transport("ray", streaming=True)``): the descriptor is valid as soon as
  the stream opens and names the sender actor; the receiver long-polls it for new frames
  (see ray_source.py) and decodes layer groups while later ones are still being computed.

GPU seam: a frame may be a CUDA ``torch.Tensor``; with ``tensor_transport="nixl"`` it is
``ray.put(tensor, _tensor_transport="nixl")`` (Ray Direct Transport) so device memory
moves by RDMA without touching the object store. See docs/kv_transfer.md.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kv_transfer.errors import KVTransferFailed, KVTransferNotFound, KVTransferTimeout, KVTransferTooLarge
from kv_transfer.transports.base import (KVTransport, ReceiveStream, SendStream, TransferLimits,
                                         TransferStats, frame_bytes, register_transport)
from kv_transfer.transports.ray_source import BOARD

logger = logging.getLogger(__name__)

POLL_S = 2.0


@dataclass(slots=True)
class RayKVDescriptor:
    """What a receiver needs to pull one transfer; pass it through Ray calls as is."""
    transfer_id: str
    deadline: float
    refs: list | None = None            # complete mode: ObjectRefs, each of a list of frames
    sizes: list[int] = field(default_factory=list)
    source: Any = None                  # streaming mode: the sender actor's handle
    transport: str = "ray"
    early: bool = False                 # streaming: made before the sender opened the transfer

    @property
    def total_bytes(self) -> int | None:
        return sum(self.sizes) if self.refs is not None else None


class _RaySend(SendStream):
    def __init__(self, limits: TransferLimits, streaming: bool, tensor_transport: str | None):
        import ray
        self._ray = ray
        self._limits = limits
        self._streaming = streaming
        self._tensor_transport = tensor_transport
        self._stats = TransferStats(limits.transfer_id)
        self._refs: list = []
        self._sizes: list[int] = []
        self._held: list = []               # complete mode: frames waiting for close()
        self._closed = False
        self._t0 = time.perf_counter()
        self._source = None
        if streaming:
            self._source = ray.get_runtime_context().current_actor   # RuntimeError outside an actor
            if not hasattr(self._source, "kv_transfer_poll"):
                raise ValueError("streaming over Ray needs the sender actor to mix in RayKVSource "
                                 "or AsyncRayKVSource")
            BOARD.open(limits.transfer_id, limits.deadline)

    @property
    def descriptor(self) -> RayKVDescriptor:
        if self._streaming:
            return RayKVDescriptor(self._limits.transfer_id, self._limits.deadline, source=self._source)
        if not self._closed:
            raise ValueError("a complete-mode Ray transfer has its descriptor after close()")
        return RayKVDescriptor(self._limits.transfer_id, self._limits.deadline, list(self._refs),
                               list(self._sizes))

    def send(self, frame) -> None:
        if self._closed:
            raise ValueError("send() after close() or abort()")
        self._limits.remaining()
        if self._tensor_transport is not None and _is_device_tensor(frame):
            size = frame.numel() * frame.element_size()
            self._limits.charge(self._stats, size)
            ref = self._ray.put(frame, _tensor_transport=self._tensor_transport)
        else:
            view = frame_bytes(frame)
            size = view.nbytes
            self._limits.charge(self._stats, size)
            if not self._streaming:
                self._held.append(np.frombuffer(view, dtype=np.uint8))
                self._sizes.append(size)
                return
            ref = self._ray.put(np.frombuffer(view, dtype=np.uint8))
        self._refs.append(ref)
        self._sizes.append(size)
        if self._streaming and not BOARD.append(self._limits.transfer_id, ref, size):
            self._closed = True
            raise KVTransferFailed(f"KV transfer {self._limits.transfer_id}: the receiver gave up "
                                   "(timed out or failed) or the transfer expired")

    def close(self) -> TransferStats:
        if self._closed:
            return self._stats
        self._closed = True
        if self._streaming:
            BOARD.close(self._limits.transfer_id)
        elif self._held:
            self._limits.remaining()
            self._refs.append(self._ray.put(self._held))
            self._held = []
        self._stats.seconds = time.perf_counter() - self._t0
        return self._stats

    def abort(self, reason: str) -> None:
        self._closed = True
        self._refs.clear()
        self._held.clear()
        if self._streaming:
            BOARD.close(self._limits.transfer_id, error=reason)


class _RayReceive(ReceiveStream):
    def __init__(self, descriptor: RayKVDescriptor, limits: TransferLimits):
        import ray
        self._ray = ray
        self._descriptor = descriptor
        self._limits = limits
        self.stats = TransferStats(limits.transfer_id)
        if descriptor.refs is not None and sum(descriptor.sizes) > limits.max_bytes:
            raise KVTransferTooLarge(f"KV transfer {limits.transfer_id} is {sum(descriptor.sizes)} bytes; "
                                     f"the limit is {limits.max_bytes}")

    def __iter__(self) -> Iterator[memoryview]:
        t0 = time.perf_counter()
        d = self._descriptor
        if d.refs is not None:
            for ref in d.refs:
                for frame in self._get(ref):
                    self._limits.charge(self.stats, frame.nbytes)
                    self.stats.seconds = time.perf_counter() - t0
                    yield memoryview(frame)
            return
        for refs, sizes in self._poll():
            for size in sizes:
                self._limits.charge(self.stats, size)
            # Every frame published since the last poll in one get: one object-store round trip.
            for value in self._get(refs):
                self.stats.seconds = time.perf_counter() - t0
                yield value if not isinstance(value, np.ndarray) else memoryview(value)

    def _poll(self) -> Iterator[tuple[list, list[int]]]:
        d = self._descriptor
        source, tid, have, opened = d.source, self._limits.transfer_id, 0, False
        try:
            while True:
                wait = min(POLL_S, self._limits.remaining())
                early = d.early and not opened
                result = self._get(source.kv_transfer_poll.remote(tid, have, wait, early), slack=1.0)
                if not result.known and early:
                    continue            # not opened yet: the deadline bounds the wait
                opened = True
                if not result.known:
                    raise KVTransferNotFound(f"sender has no streamed KV transfer {tid!r} (expired?)")
                if result.error is not None:
                    raise KVTransferFailed(f"KV transfer {tid} failed at the sender: {result.error}")
                if result.refs:
                    yield list(result.refs), list(result.sizes)
                have += len(result.refs)
                if result.done:
                    return
        finally:
            try:
                source.kv_transfer_release.remote(tid)
            except Exception:          # the sender is gone: nothing left to release
                logger.debug("could not release streamed transfer %s", tid, exc_info=True)

    def _get(self, ref: Any, slack: float = 0.0) -> Any:
        ray = self._ray
        try:
            return ray.get(ref, timeout=self._limits.remaining() + slack)
        except ray.exceptions.GetTimeoutError:
            raise KVTransferTimeout(f"KV transfer {self._limits.transfer_id} missed its deadline") from None
        except ray.exceptions.RayError as exc:
            raise KVTransferFailed(f"KV transfer {self._limits.transfer_id} failed: {exc}") from None


@register_transport
class RayTransport(KVTransport):
    """Frames through Ray's object store; ``streaming=True`` for layer-wise streaming from an actor.

    ``tensor_transport`` (e.g. ``"nixl"``) is the GPU seam: CUDA tensor frames go through
    Ray Direct Transport instead of the object store.
    """

    name = "ray"

    def __init__(self, streaming: bool = False, tensor_transport: str | None = None):
        if tensor_transport not in (None, "nixl", "nccl", "gloo"):
            raise ValueError(f"tensor_transport must be None, 'nixl', 'nccl' or 'gloo', got {tensor_transport!r}")
        self.streaming = bool(streaming)
        self.tensor_transport = tensor_transport

    def open_send(self, transfer_id: str, deadline: float | None = None,
                  max_bytes: int | None = None) -> SendStream:
        return _RaySend(TransferLimits.make(transfer_id, deadline, max_bytes), self.streaming,
                        self.tensor_transport)

    def open_receive(self, descriptor: RayKVDescriptor, deadline: float | None = None,
                     max_bytes: int | None = None) -> ReceiveStream:
        if not isinstance(descriptor, RayKVDescriptor):
            raise ValueError(f"the ray transport cannot open a {type(descriptor).__name__}")
        if descriptor.refs is None and descriptor.source is None:
            raise ValueError("a Ray KV descriptor needs frame refs or a source actor")
        limits = TransferLimits.make(descriptor.transfer_id, deadline, max_bytes, descriptor.deadline)
        return _RayReceive(descriptor, limits)


def early_descriptor(transfer_id: str, deadline: float, source: Any) -> RayKVDescriptor:
    """A streaming descriptor for a transfer ``source`` (the sender actor) will open later:
    the receiver can start waiting for it while the sender still computes (the decode worker
    told at admission). The sender opens it under this id, or cancels it
    (``SectionBoard.cancel``) if it will not send."""
    return RayKVDescriptor(transfer_id, deadline, source=source, early=True)


def _is_device_tensor(frame: Any) -> bool:
    return hasattr(frame, "is_cuda") and bool(frame.is_cuda)
