"""The binary frames of the KV wire format (version 1): one header frame, then section frames.

All integers little-endian. Full specification with diagrams: docs/kv_transfer.md.

Header frame::

    prelude   4s magic "TKVH" | u16 version | u16 flags | u32 body length N
    body      u8 dtype | u8 0 | u16 0 | u32 layers | u32 kv heads | u32 head dim
              | u64 tokens | u32 layers per section | u32 sections | u64 stream id
              | u16+utf8 model fingerprint | u8+ascii codec | u8+ascii entropy ("" = none)
              | u32+utf8 codec params (canonical JSON object of scalars)
              | [flags & INDEX] u64 frame length of each section (meta section first)
    trailer   u32 CRC-32 of prelude + body

Section frame (one per layer group, plus one meta section first when flags & SEQUENCE)::

    4s magic "TKVS" | u32 index (0xFFFFFFFF = meta) | u32 first layer | u32 layer count
    | u64 stored length S | u64 raw length (before the entropy stage) | u32 CRC-32
    | S payload bytes

With an entropy stage, a payload it could not shrink is stored as is: stored length ==
raw length marks it. The section CRC is seeded with the header's stream id, then covers the frame fields and
the payload: a section from another blob or stream fails it even when its layout matches.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from kv_transfer.errors import KVChecksumError, KVFormatError, KVModelMismatch

FORMAT_VERSION = 1
HEADER_MAGIC = b"TKVH"
SECTION_MAGIC = b"TKVS"
META_INDEX = 0xFFFFFFFF
FLAG_SEQUENCE = 1           # a meta section (token ids, sampling, rng) precedes the KV sections
FLAG_INDEX = 2              # the header lists every section frame's length
_KNOWN_FLAGS = FLAG_SEQUENCE | FLAG_INDEX

DTYPE_CODES = {"float32": 1, "float16": 2, "bfloat16": 3}
_DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}

_PRELUDE = struct.Struct("<4sHHI")
_FIXED = struct.Struct("<BBHIIIQIIQ")
_U32 = struct.Struct("<I")
_SECTION = struct.Struct("<4sIIIQQ")
SECTION_OVERHEAD = _SECTION.size + _U32.size
_MAX_BODY = 1 << 24
_MAX_DIM = 1 << 16


@dataclass(frozen=True, slots=True)
class KVHeader:
    """Everything a receiver needs to check and decode the sections that follow."""
    dtype: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    num_tokens: int
    layers_per_section: int
    stream_id: int
    model_fingerprint: str
    codec: str
    codec_params: dict[str, Any]
    entropy: str | None = None
    has_sequence: bool = False
    section_lengths: tuple[int, ...] | None = None     # frame lengths; meta section first
    version: int = FORMAT_VERSION

    @property
    def num_sections(self) -> int:
        """KV sections (the meta section not counted)."""
        return -(-self.num_layers // self.layers_per_section)

    @property
    def num_frames(self) -> int:
        return self.num_sections + (1 if self.has_sequence else 0)

    def layer_range(self, index: int) -> tuple[int, int]:
        """(first layer, layer count) of KV section ``index``."""
        start = index * self.layers_per_section
        return start, min(self.layers_per_section, self.num_layers - start)

    def check_layout(self, layout: Any) -> None:
        """KVModelMismatch unless this blob was made for ``layout`` (an engine ``KVLayout``)."""
        if self.model_fingerprint != layout.model_fingerprint:
            raise KVModelMismatch(f"KV was made by model {self.model_fingerprint!r}, "
                                  f"this engine runs {layout.model_fingerprint!r}")
        mine = (layout.num_layers, layout.num_kv_heads, layout.head_dim, layout.dtype)
        theirs = (self.num_layers, self.num_kv_heads, self.head_dim, self.dtype)
        if mine != theirs:
            raise KVModelMismatch(f"KV layout (layers, kv heads, head dim, dtype) {theirs} "
                                  f"does not match this engine's {mine}")

    def pack(self) -> bytes:
        flags = (FLAG_SEQUENCE if self.has_sequence else 0) | (FLAG_INDEX if self.section_lengths else 0)
        params = json.dumps(self.codec_params, sort_keys=True, separators=(",", ":"), allow_nan=False)
        body = [_FIXED.pack(DTYPE_CODES[self.dtype], 0, 0, self.num_layers, self.num_kv_heads,
                            self.head_dim, self.num_tokens, self.layers_per_section,
                            self.num_sections, self.stream_id),
                _string(self.model_fingerprint, 2), _string(self.codec, 1),
                _string(self.entropy or "", 1), _string(params, 4)]
        if self.section_lengths:
            if len(self.section_lengths) != self.num_frames:
                raise ValueError(f"{len(self.section_lengths)} section lengths for {self.num_frames} sections")
            body.append(struct.pack(f"<{self.num_frames}Q", *self.section_lengths))
        body_bytes = b"".join(body)
        frame = _PRELUDE.pack(HEADER_MAGIC, self.version, flags, len(body_bytes)) + body_bytes
        return frame + _U32.pack(zlib.crc32(frame))


def unpack_header(buf: bytes | memoryview) -> tuple[KVHeader, int]:
    """Parse and verify the header frame at the start of ``buf``; returns (header, its length)."""
    view = memoryview(buf).cast("B")
    if len(view) < _PRELUDE.size:
        raise KVFormatError(f"KV blob is truncated: {len(view)} bytes, not even a header prelude")
    magic, version, flags, body_len = _PRELUDE.unpack_from(view)
    if magic != HEADER_MAGIC:
        raise KVFormatError(f"not a KV blob: magic {bytes(magic)!r}")
    if version != FORMAT_VERSION:
        raise KVFormatError(f"KV wire format version {version} is not supported (this build reads {FORMAT_VERSION})")
    if flags & ~_KNOWN_FLAGS or body_len > _MAX_BODY:
        raise KVFormatError(f"KV header has unknown flags {flags:#x} or a bad length {body_len}")
    end = _PRELUDE.size + body_len
    if len(view) < end + _U32.size:
        raise KVFormatError(f"KV blob is truncated inside its header ({len(view)} < {end + _U32.size} bytes)")
    (crc,) = _U32.unpack_from(view, end)
    if zlib.crc32(view[:end]) != crc:
        raise KVChecksumError("KV header checksum mismatch")
    try:
        header = _parse_body(view[_PRELUDE.size:end], flags, version)
    except (struct.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise KVFormatError(f"KV header is malformed: {exc}") from None
    return header, end + _U32.size


def _parse_body(body: memoryview, flags: int, version: int) -> KVHeader:
    (dtype_code, _, _, layers, heads, head_dim, tokens, per_section, sections,
     stream_id) = _FIXED.unpack_from(body)
    pos = _FIXED.size
    fingerprint, pos = _read_string(body, pos, 2)
    codec, pos = _read_string(body, pos, 1)
    entropy, pos = _read_string(body, pos, 1)
    params_json, pos = _read_string(body, pos, 4)
    if dtype_code not in _DTYPE_NAMES:
        raise ValueError(f"unknown dtype code {dtype_code}")
    if not (0 < layers <= _MAX_DIM and 0 < heads <= _MAX_DIM and 0 < head_dim <= _MAX_DIM
            and 0 < per_section <= layers and tokens < 1 << 32):
        raise ValueError(f"implausible shape: layers {layers}, heads {heads}, head dim {head_dim}, "
                         f"tokens {tokens}, layers per section {per_section}")
    params = json.loads(params_json)
    if not isinstance(params, dict) or not all(
            isinstance(v, (int, float, str, bool)) or v is None for v in params.values()):
        raise ValueError("codec parameters must be a JSON object of scalars")
    header = KVHeader(_DTYPE_NAMES[dtype_code], layers, heads, head_dim, tokens, per_section,
                      stream_id, fingerprint, codec, params, entropy or None,
                      bool(flags & FLAG_SEQUENCE), None, version)
    if sections != header.num_sections:
        raise ValueError(f"{sections} sections declared for {layers} layers in groups of {per_section}")
    if flags & FLAG_INDEX:
        lengths = struct.unpack_from(f"<{header.num_frames}Q", body, pos)
        pos += 8 * header.num_frames
        if any(n < SECTION_OVERHEAD for n in lengths):
            raise ValueError("a section length is shorter than a section frame")
        header = KVHeader(**{**_fields(header), "section_lengths": tuple(lengths)})
    if pos != len(body):
        raise ValueError(f"{len(body) - pos} unexpected bytes at the end of the header")
    return header


@dataclass(frozen=True, slots=True)
class Section:
    """One verified section frame."""
    index: int
    layer_start: int
    layer_count: int
    raw_len: int
    payload: memoryview
    frame_len: int


def pack_section(stream_id: int, index: int, layer_start: int, layer_count: int,
                 raw_len: int, payload: list) -> list:
    """The frame of a section as buffers: its 40-byte frame header, then ``payload`` as given."""
    stored = sum(memoryview(b).nbytes for b in payload)
    fields = _SECTION.pack(SECTION_MAGIC, index, layer_start, layer_count, stored, raw_len)
    crc = zlib.crc32(fields, zlib.crc32(stream_id.to_bytes(8, "little")))
    for b in payload:
        crc = zlib.crc32(b, crc)
    return [fields + _U32.pack(crc), *payload]


def unpack_section(buf: bytes | memoryview, offset: int, stream_id: int) -> Section:
    """Parse and verify the section frame at ``offset``; the payload stays a view into ``buf``."""
    view = memoryview(buf).cast("B")
    if len(view) < offset + SECTION_OVERHEAD:
        raise KVFormatError(f"KV blob is truncated: a section frame header at {offset} is cut short")
    magic, index, layer_start, layer_count, stored, raw_len = _SECTION.unpack_from(view, offset)
    if magic != SECTION_MAGIC:
        raise KVFormatError(f"expected a section frame at byte {offset}, found magic {bytes(magic)!r}")
    start = offset + SECTION_OVERHEAD
    if len(view) < start + stored:
        raise KVFormatError(f"KV blob is truncated: section {index} needs {stored} bytes, "
                            f"{len(view) - start} remain")
    (crc,) = _U32.unpack_from(view, offset + _SECTION.size)
    payload = view[start:start + stored]
    check = zlib.crc32(view[offset:offset + _SECTION.size], zlib.crc32(stream_id.to_bytes(8, "little")))
    if zlib.crc32(payload, check) != crc:
        raise KVChecksumError(f"KV section {index} checksum mismatch (corrupted, or from another blob)")
    return Section(index, layer_start, layer_count, raw_len, payload, SECTION_OVERHEAD + stored)


def _string(text: str, width: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) >= 1 << (8 * width):
        raise ValueError(f"string of {len(data)} bytes does not fit a {width}-byte length")
    return len(data).to_bytes(width, "little") + data


def _read_string(body: memoryview, pos: int, width: int) -> tuple[str, int]:
    if pos + width > len(body):
        raise ValueError("header ends inside a string length")
    size = int.from_bytes(body[pos:pos + width], "little")
    end = pos + width + size
    if end > len(body):
        raise ValueError("header ends inside a string")
    return bytes(body[pos + width:end]).decode("utf-8"), end


def _fields(header: KVHeader) -> dict[str, Any]:
    return {name: getattr(header, name) for name in KVHeader.__dataclass_fields__}
