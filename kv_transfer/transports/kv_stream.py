"""KV over a transport, layer group by layer group: the glue between the wire format's
streaming pieces and a ``SendStream`` / ``ReceiveStream``.

Sender: ``KVSectionSender`` sends the header at once, then each layer group as soon as
its layers are handed in (``send_layers``), then the sequence metadata (which holds the
first sampled token, known only after the last layer). Receiver: ``iter_kv_sections``
yields ``(first_layer, kv_group)`` as sections arrive, so an engine can import layer by
layer; ``receive_kv`` / ``receive_sequence`` collect everything.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from kv_transfer.errors import KVFormatError
from kv_transfer.transports.base import ReceiveStream, SendStream, TransferStats
from kv_transfer.wire.sequence import pack_meta, unpack_meta
from kv_transfer.wire.frames import META_INDEX
from kv_transfer.wire.stream import KVStreamDecoder, KVStreamEncoder

logger = logging.getLogger(__name__)


class KVSectionSender:
    """Encodes and sends one sequence's KV through ``stream`` as its layers become ready."""

    def __init__(self, stream: SendStream, layout: Any, num_tokens: int, codec: str = "raw",
                 codec_params: dict | None = None, entropy: str | None = None,
                 layers_per_section: int = 1, with_sequence: bool = False):
        self.stream = stream
        self.encoder = KVStreamEncoder(layout, num_tokens, codec, codec_params, entropy,
                                       layers_per_section, has_sequence=with_sequence)
        self._pending: dict[int, torch.Tensor] = {}
        self._next_section = 0
        self._meta_sent = not with_sequence
        stream.send(self.encoder.header_bytes())

    def send_layers(self, first_layer: int, kv: torch.Tensor) -> None:
        """Hand in layers ``first_layer ..`` (``[l, 2, T, H, D]``); full sections go out at once.
        A section that lies whole in ``kv`` is encoded from a view of it (no copy); one whose
        layers came in several calls is stacked first."""
        for i in range(kv.shape[0]):
            self._pending[first_layer + i] = kv[i]
        header = self.encoder.header
        while self._next_section < header.num_sections:
            start, count = header.layer_range(self._next_section)
            if not all(layer in self._pending for layer in range(start, start + count)):
                return
            if first_layer <= start and start + count <= first_layer + kv.shape[0]:
                group = kv[start - first_layer:start - first_layer + count]
                for layer in range(start, start + count):
                    del self._pending[layer]
            else:
                group = torch.stack([self._pending.pop(layer) for layer in range(start, start + count)])
            self.stream.send(self.encoder.encode_section(self._next_section, group))
            self._next_section += 1

    def send_sequence(self, seq: Any) -> None:
        """Send the ``SequenceKV``'s metadata (token ids, sampling, rng); its ``kv`` is not re-sent."""
        self.stream.send(self.encoder.meta_section(pack_meta(seq)))
        self._meta_sent = True

    def close(self) -> TransferStats:
        """Finish the transfer; ValueError if layers or metadata are missing."""
        if self._next_section != self.encoder.num_sections or not self._meta_sent:
            self.stream.abort("sender closed before sending every section")
            raise ValueError(f"sent {self._next_section} of {self.encoder.num_sections} sections"
                             + ("" if self._meta_sent else " and no sequence metadata"))
        return self.stream.close()


def send_kv(stream: SendStream, kv: torch.Tensor, layout: Any, codec: str = "raw",
            codec_params: dict | None = None, entropy: str | None = None,
            layers_per_section: int = 1, seq: Any = None) -> TransferStats:
    """Send a whole KV tensor (and ``seq``'s metadata if given) section by section."""
    sender = KVSectionSender(stream, layout, int(kv.shape[2]), codec, codec_params, entropy,
                             layers_per_section, with_sequence=seq is not None)
    try:
        sender.send_layers(0, kv)
        if seq is not None:
            sender.send_sequence(seq)
    except BaseException as exc:
        stream.abort(f"sender failed: {exc!r}")
        raise
    return sender.close()


class KVSectionReceiver:
    """Iterates a transfer's KV sections as they arrive; ``meta`` holds the sequence metadata.
    ``whole``: the sections land in ``self.kv``, the transfer's whole ``[L, 2, T, H, D]`` KV,
    and are yielded as views of it. It is allocated once the first section has decoded: the
    header's token count is only trusted after a section of that size arrived within the
    transfer's byte limit (a forged header must not make the receiver allocate), so the first
    section is copied in and every later one is decoded in place."""

    def __init__(self, stream: ReceiveStream, layout: Any, device: torch.device | str = "cpu",
                 whole: bool = False):
        self.stream, self.layout, self.device = stream, layout, device
        self.decoder: KVStreamDecoder | None = None
        self.whole = whole
        self.kv: torch.Tensor | None = None

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        for frame in self.stream:
            if self.decoder is None:
                self.decoder = KVStreamDecoder(self.layout, frame, self.device)
                continue
            section = self.decoder.read_frame(frame)
            if section.frame_len != len(frame):
                raise KVFormatError("a transport frame holds more than one section")
            if section.index == META_INDEX:
                self.decoder.decode_meta(section)
            elif not self.whole:
                yield self.decoder.decode_section(section)
            elif self.kv is None:
                start, group = self.decoder.decode_section(section)
                h = self.decoder.header
                self.kv = torch.empty((h.num_layers, 2, h.num_tokens, h.num_kv_heads, h.head_dim),
                                      dtype=group.dtype, device=group.device)
                self.kv[start:start + group.shape[0]] = group
                yield start, self.kv[start:start + group.shape[0]]
            else:
                out = self.kv[section.layer_start:section.layer_start + section.layer_count]
                yield self.decoder.decode_section(section, out=out)
        if self.decoder is None:
            raise KVFormatError("the KV transfer ended before its header arrived")
        self.decoder.finish()


def iter_kv_sections(stream: ReceiveStream, layout: Any,
                     device: torch.device | str = "cpu") -> Iterator[tuple[int, torch.Tensor]]:
    """``(first_layer, kv_group)`` for each section as it arrives, verified against ``layout``."""
    return iter(KVSectionReceiver(stream, layout, device))


def receive_kv(stream: ReceiveStream, layout: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """The whole ``[L, 2, T, H, D]`` KV of a streamed transfer."""
    return _collect(KVSectionReceiver(stream, layout, device, whole=True))


def receive_sequence(stream: ReceiveStream, layout: Any, device: torch.device | str = "cpu"):
    """The ``SequenceKV`` of a streamed transfer sent with its metadata."""
    receiver = KVSectionReceiver(stream, layout, device, whole=True)
    kv = _collect(receiver)
    if receiver.decoder.meta is None:
        raise KVFormatError("this KV transfer carries no sequence metadata")
    return unpack_meta(receiver.decoder.meta, kv, layout)


def _collect(receiver: KVSectionReceiver) -> torch.Tensor:
    """Every section, each decoded in place into the receiver's whole KV (no second copy)."""
    sections = sum(1 for _ in receiver)
    if not sections:     # a layout always has >= 1 layer, so a finished stream had sections
        raise KVFormatError("the KV transfer carried no sections")
    return receiver.kv
