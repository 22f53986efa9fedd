"""Layer-group streaming: encode KV section by section, decode sections as they arrive.

A sender builds a ``KVStreamEncoder``, ships ``header_bytes()`` first, then each
``encode_section(i, kv_group)`` as soon as that layer group exists. A receiver feeds the
header to a ``KVStreamDecoder`` (which checks it against its own ``KVLayout`` before
anything else) and then each section frame, in any order, getting back
``(first_layer, tensor[l, 2, T, H, D])`` it can import right away.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any

import torch

from kv_transfer.codecs import GroupShape, get_codec, get_entropy_stage
from kv_transfer.errors import KVFormatError, UnknownCodecError
from kv_transfer.wire.frames import (META_INDEX, KVHeader, Section, pack_section,
                                     unpack_header, unpack_section)

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"unsupported KV dtype {name!r}; one of {sorted(TORCH_DTYPES)}") from None


class KVStreamEncoder:
    """Encodes one sequence's KV (``num_tokens`` tokens of ``layout``) section by section."""

    def __init__(self, layout: Any, num_tokens: int, codec: str = "raw",
                 codec_params: dict | None = None, entropy: str | None = None,
                 layers_per_section: int = 1, has_sequence: bool = False):
        if not isinstance(num_tokens, int) or not 0 <= num_tokens < 1 << 32:
            raise ValueError(f"num_tokens must be an int in [0, 2**32), got {num_tokens!r}")
        if not isinstance(layers_per_section, int) or not 1 <= layers_per_section:
            raise ValueError(f"layers_per_section must be a positive int, got {layers_per_section!r}")
        self.dtype = torch_dtype(layout.dtype)
        self.codec = get_codec(codec, **(codec_params or {}))
        self.entropy = get_entropy_stage(entropy) if entropy else None
        self.header = KVHeader(layout.dtype, layout.num_layers, layout.num_kv_heads, layout.head_dim,
                               num_tokens, min(layers_per_section, layout.num_layers),
                               secrets.randbits(64), layout.model_fingerprint, codec,
                               self.codec.params(), entropy, has_sequence)

    @property
    def num_sections(self) -> int:
        return self.header.num_sections

    def header_bytes(self, section_lengths: tuple[int, ...] | None = None) -> bytes:
        """The header frame; with ``section_lengths`` (frame lengths, meta first) it carries an index."""
        if section_lengths is None:
            return self.header.pack()
        h = self.header
        return KVHeader(h.dtype, h.num_layers, h.num_kv_heads, h.head_dim, h.num_tokens,
                        h.layers_per_section, h.stream_id, h.model_fingerprint, h.codec,
                        h.codec_params, h.entropy, h.has_sequence, tuple(section_lengths)).pack()

    def encode_section(self, index: int, kv_group: torch.Tensor) -> list:
        """The frame of KV section ``index`` as buffers; ``kv_group`` is its ``[l, 2, T, H, D]``."""
        h = self.header
        if not 0 <= index < h.num_sections:
            raise ValueError(f"section index {index} outside 0..{h.num_sections - 1}")
        start, count = h.layer_range(index)
        want = (count, 2, h.num_tokens, h.num_kv_heads, h.head_dim)
        if tuple(kv_group.shape) != want:
            raise ValueError(f"section {index} must be KV of shape {want}, got {tuple(kv_group.shape)}")
        if kv_group.dtype != self.dtype:
            raise ValueError(f"KV dtype {kv_group.dtype} does not match the layout's {h.dtype}")
        buffers = self.codec.encode(kv_group) if h.num_tokens else []
        raw_len = sum(memoryview(b).nbytes for b in buffers)
        if self.entropy is not None and raw_len:
            packed = self.entropy.compress(buffers, raw_len)
            if len(packed) < raw_len:      # else stored as is: stored length == raw length says so
                buffers = [packed]
        return pack_section(h.stream_id, index, start, count, raw_len, buffers)

    def meta_section(self, payload: bytes) -> list:
        """The frame of the sequence metadata section (stored as is, no codec, no entropy stage)."""
        if not self.header.has_sequence:
            raise ValueError("this stream was not opened with has_sequence=True")
        return pack_section(self.header.stream_id, META_INDEX, 0, 0, len(payload), [payload])


class KVStreamDecoder:
    """Verifies and decodes the sections of one stream against the receiver's ``KVLayout``."""

    def __init__(self, layout: Any, header: bytes | memoryview | KVHeader,
                 device: torch.device | str = "cpu"):
        self.header = header if isinstance(header, KVHeader) else unpack_header(header)[0]
        self.header.check_layout(layout)
        self.dtype = torch_dtype(self.header.dtype)
        self.device = device
        try:
            self.codec = get_codec(self.header.codec, **self.header.codec_params)
            self.entropy = get_entropy_stage(self.header.entropy) if self.header.entropy else None
        except UnknownCodecError:
            raise
        except ValueError as exc:
            raise KVFormatError(f"KV blob names codec {self.header.codec!r} with bad parameters: {exc}") from None
        self._done: set[int] = set()
        self.meta: bytes | None = None

    @property
    def complete(self) -> bool:
        return len(self._done) == self.header.num_sections and (
            self.meta is not None or not self.header.has_sequence)

    def read_frame(self, frame: bytes | memoryview, offset: int = 0) -> Section:
        """Verify the section frame at ``offset`` (checksum, stream, index, layer range)."""
        section = unpack_section(frame, offset, self.header.stream_id)
        if section.index == META_INDEX:
            if not self.header.has_sequence or self.meta is not None:
                raise KVFormatError("unexpected or repeated sequence metadata section")
            return section
        h = self.header
        if not 0 <= section.index < h.num_sections or section.index in self._done:
            raise KVFormatError(f"unexpected or repeated KV section {section.index}")
        if (section.layer_start, section.layer_count) != h.layer_range(section.index):
            raise KVFormatError(f"section {section.index} claims layers {section.layer_start}"
                                f"+{section.layer_count}, the header says {h.layer_range(section.index)}")
        return section

    def decode_section(self, frame: bytes | memoryview | Section,
                       out: torch.Tensor | None = None) -> tuple[int, torch.Tensor]:
        """``(first_layer, kv_group)`` of one KV section frame (a whole frame, or a parsed one).
        With ``out`` (the destination ``[l, 2, T, H, D]`` slice, layout dtype) the group is
        decoded in place there."""
        section = frame if isinstance(frame, Section) else self._whole_frame(frame)
        if section.index == META_INDEX:
            raise KVFormatError("decode_section got the metadata section; use decode_meta")
        h = self.header
        shape = GroupShape(section.layer_count, h.num_tokens, h.num_kv_heads, h.head_dim)
        if out is not None and (tuple(out.shape) != shape.dims or out.dtype != self.dtype):
            raise ValueError(f"out must be {shape.dims} {self.dtype}, got {tuple(out.shape)} {out.dtype}")
        payload = self._payload(section, shape)
        if h.num_tokens == 0:
            kv = torch.empty(shape.dims, dtype=self.dtype, device=self.device) if out is None else out
        else:
            kv = self.codec.decode(payload, shape, self.dtype, self.device, out=out)
        if tuple(kv.shape) != shape.dims or kv.dtype != self.dtype:   # a codec bug, never the blob
            raise KVFormatError(f"codec {h.codec} decoded {tuple(kv.shape)} {kv.dtype}, expected {shape.dims}")
        self._done.add(section.index)
        return section.layer_start, kv

    def decode_meta(self, frame: bytes | memoryview | Section) -> bytes:
        """The payload of the sequence metadata section."""
        section = frame if isinstance(frame, Section) else self._whole_frame(frame)
        if section.index != META_INDEX:
            raise KVFormatError(f"expected the metadata section, got KV section {section.index}")
        if section.raw_len != len(section.payload):
            raise KVFormatError("metadata section sizes disagree")
        self.meta = bytes(section.payload)
        return self.meta

    def finish(self) -> None:
        """KVFormatError unless every section (and the metadata, if any) has been decoded."""
        if not self.complete:
            missing = sorted(set(range(self.header.num_sections)) - self._done)
            raise KVFormatError(f"KV stream ended early: sections {missing[:8]} missing"
                                + ("" if self.meta is not None or not self.header.has_sequence
                                   else " and its metadata"))

    def _whole_frame(self, frame: bytes | memoryview) -> Section:
        section = self.read_frame(frame)
        if section.frame_len != memoryview(frame).nbytes:
            raise KVFormatError(f"section frame has {memoryview(frame).nbytes - section.frame_len} trailing bytes")
        return section

    def _payload(self, section: Section, shape: GroupShape) -> memoryview:
        bound = self.codec.max_encoded_size(shape, self.dtype) if shape.num_tokens else 0
        if section.raw_len > bound:
            raise KVFormatError(f"section {section.index} declares {section.raw_len} bytes, "
                                f"more than codec {self.header.codec} can produce ({bound})")
        if self.entropy is None or section.raw_len == len(section.payload):
            if section.raw_len != len(section.payload):
                raise KVFormatError(f"section {section.index} sizes disagree")
            return section.payload
        return memoryview(self.entropy.decompress(section.payload, section.raw_len))
