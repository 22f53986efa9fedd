"""Prefill-to-decode KV hand-off over a transport, layer group by layer group.

The sender opens a transfer, hands the small descriptor to the router at once, and
encodes and sends the layer groups (then the sequence metadata) in the background; with
the streaming Ray transport the decode worker decodes early groups while later ones are
still being encoded. Everything is checked against the receiver's own ``KVLayout``
before it reaches its engine.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.kv_export import KVLayout, SequenceKV
from kv_transfer.config import KVTransferConfig
from kv_transfer.transports import get_transport
from kv_transfer.transports.base import new_transfer_id
from kv_transfer.transports.kv_stream import receive_sequence, send_kv

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Handoff:
    """An opened transfer: ``descriptor`` goes to the receiver, ``run()`` sends the bytes."""
    descriptor: Any
    run: Callable[[], int]          # returns bytes sent
    streaming: bool


class KVSender:
    """Sends exported KV with the ``kv_transfer:`` settings; ``streaming`` (the sender is a Ray
    actor the receiver can pull from): layer groups flow while later ones are encoded."""

    def __init__(self, layout: KVLayout, config: KVTransferConfig | None = None, *,
                 streaming: bool = False, layers_per_section: int | None = None):
        config = config or KVTransferConfig()
        self.layout, self.codec, self.entropy = layout, config.codec, config.entropy
        self.streaming = streaming
        self.transport = get_transport(config.transport, **({"streaming": True} if streaming else {}))
        self.deadline_s, self.max_bytes = config.deadline_s, config.max_bytes
        self.layers_per_section, self.section_bytes = layers_per_section, config.section_bytes

    def section_layers(self, kv) -> int:
        """Layers per section for this KV: ``layers_per_section`` if given, else as many whole
        layers as fit ``section_bytes`` (at least one)."""
        if self.layers_per_section is not None:
            return self.layers_per_section
        per_layer = kv[0].numel() * kv.element_size()
        return max(1, min(int(kv.shape[0]), self.section_bytes // max(1, per_layer)))

    def open(self, seq: SequenceKV, codec: str | None = None, deadline: float | None = None,
             transfer_id: str = "") -> Handoff:
        """``transfer_id``: the one the receiver was already told (``early_descriptor``);
        by default a fresh one (a recovered request is re-sent under the same request id:
        each attempt gets its own transfer)."""
        transfer_id = transfer_id or new_transfer_id(seq.request_id)
        stream = self.transport.open_send(transfer_id, _deadline(deadline, self.deadline_s), self.max_bytes)

        def run() -> int:
            stats = send_kv(stream, seq.kv, self.layout, codec or self.codec, entropy=self.entropy,
                            layers_per_section=self.section_layers(seq.kv), seq=seq)
            return stats.bytes_moved

        if self.streaming:
            return Handoff(stream.descriptor, run, True)
        sent = run()   # complete mode: the descriptor lists every frame only after close
        return Handoff(stream.descriptor, lambda: sent, False)


class KVReceiver:
    """Receives KV over the configured transport; the codec comes with each transfer."""

    def __init__(self, layout: KVLayout, config: KVTransferConfig | None = None):
        config = config or KVTransferConfig()
        self.layout = layout
        self.transport = get_transport(config.transport)
        self.deadline_s, self.max_bytes = config.deadline_s, config.max_bytes

    def receive(self, descriptor: Any, deadline: float | None = None) -> tuple[SequenceKV, int]:
        """Fetch, verify and decode; raises the kv_transfer typed errors. A descriptor made
        before its transfer opened (``early``) waits for it until the request's ``deadline``:
        how long prefill takes is not the transfer's time."""
        if getattr(descriptor, "early", False):
            limit = deadline if deadline is not None else descriptor.deadline
        else:
            limit = _deadline(deadline, self.deadline_s)
        stream = self.transport.open_receive(descriptor, limit, self.max_bytes)
        seq = receive_sequence(stream, self.layout)
        return seq, stream.stats.bytes_moved


def _deadline(deadline: float | None, default_s: float) -> float:
    import time
    own = time.time() + default_s
    return own if deadline is None else min(deadline, own)
