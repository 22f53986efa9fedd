"""Prefill-to-decode KV hand-off: encode a ``SequenceKV``, move it, decode it on the other side.

The sender encodes with the deployment's codec (or the request's override) into the
versioned, checksummed wire format and publishes it through the configured transport;
the small handle it returns travels with the router's messages. The receiver fetches and
verifies it against its own ``KVLayout`` before anything reaches its engine.
"""
from __future__ import annotations

import logging
import time

from engine.kv_export import KVLayout, SequenceKV
from kv_transfer.errors import KVTransferTimeout, KVTransferTooLarge
from kv_transfer.transports import get_transport
from kv_transfer.wire import decode_sequence, encode_sequence

logger = logging.getLogger(__name__)


class KVSender:
    def __init__(self, layout: KVLayout, codec: str = "raw", entropy: str | None = None,
                 transport: str = "ray", deadline_s: float = 10.0, max_bytes: int = 1 << 30):
        self.layout, self.codec, self.entropy = layout, codec, entropy
        self.transport = get_transport(transport)
        self.deadline_s, self.max_bytes = deadline_s, max_bytes

    def send(self, seq: SequenceKV, codec: str | None = None, deadline: float | None = None):
        """Encode and publish; returns (handle, bytes)."""
        blob = encode_sequence(seq, self.layout, codec=codec or self.codec, entropy=self.entropy)
        if len(blob) > self.max_bytes:
            raise KVTransferTooLarge(f"KV of request {seq.request_id} is {len(blob)} bytes; "
                                     f"the limit is {self.max_bytes}")
        return self.transport.publish(seq.request_id, blob, _deadline(deadline, self.deadline_s)), len(blob)


class KVReceiver:
    def __init__(self, layout: KVLayout, codec: str = "raw", entropy: str | None = None,
                 transport: str = "ray", deadline_s: float = 10.0, max_bytes: int = 1 << 30):
        self.layout = layout
        self.transport = get_transport(transport)
        self.deadline_s, self.max_bytes = deadline_s, max_bytes

    def receive(self, handle, deadline: float | None = None) -> tuple[SequenceKV, int]:
        """Fetch and verify; raises the kv_transfer typed errors."""
        limit = _deadline(deadline, self.deadline_s)
        blob = self.transport.fetch(handle, limit, self.max_bytes)
        if time.time() > limit:
            raise KVTransferTimeout("KV arrived after the request's deadline")
        return decode_sequence(blob, self.layout), len(blob)


def _deadline(deadline: float | None, default_s: float) -> float:
    own = time.time() + default_s
    return own if deadline is None else min(deadline, own)
