"""Whole-blob encoding: one sequence's KV as a single ``bytes`` (header with a section index,
then every section frame), and the inverse. Built from the streaming pieces."""
from __future__ import annotations

from typing import Any

import torch

from kv_transfer.errors import KVFormatError
from kv_transfer.wire.frames import META_INDEX, KVHeader, unpack_header, unpack_section
from kv_transfer.wire.stream import KVStreamDecoder, KVStreamEncoder


def encode_kv(kv: torch.Tensor, layout: Any, codec: str = "raw", codec_params: dict | None = None,
              entropy: str | None = None, layers_per_section: int = 1) -> bytes:
    """Encode a whole ``[L, 2, T, H, D]`` KV tensor of ``layout`` into a self-describing blob."""
    encoder = KVStreamEncoder(layout, _num_tokens(kv, layout), codec, codec_params, entropy,
                              layers_per_section)
    return assemble(encoder, _section_frames(encoder, kv))


def decode_kv(blob: bytes | memoryview, layout: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``[L, 2, T, H, D]`` KV of a blob, in ``layout.dtype``; raises KVFormatError,
    KVChecksumError or KVModelMismatch instead of ever returning wrong tensors."""
    decoder, sections = open_blob(blob, layout, device)
    return decode_sections(decoder, sections)


def decode_sections(decoder: KVStreamDecoder, sections) -> torch.Tensor:
    """Decode verified sections into one tensor. The full output is allocated only after a
    first section decoded: a header alone cannot make the receiver allocate its claim."""
    h = decoder.header
    out = None
    for section in sections:
        if section.index == META_INDEX:
            decoder.decode_meta(section)
            continue
        start, count = section.layer_start, section.layer_count
        if out is None:
            _, first = decoder.decode_section(section)
            out = torch.empty((h.num_layers, 2, h.num_tokens, h.num_kv_heads, h.head_dim),
                              dtype=decoder.dtype, device=decoder.device)
            out[start:start + count] = first
        else:
            decoder.decode_section(section, out=out[start:start + count])
    decoder.finish()
    return out


def open_blob(blob: bytes | memoryview, layout: Any, device: torch.device | str = "cpu"):
    """Verify a blob's header against ``layout``; returns (decoder, iterator of verified sections)."""
    view = memoryview(blob).cast("B")
    header, pos = unpack_header(view)
    decoder = KVStreamDecoder(layout, header, device)
    return decoder, _walk(decoder, view, pos)


def _walk(decoder: KVStreamDecoder, view: memoryview, pos: int):
    header: KVHeader = decoder.header
    for i in range(header.num_frames):
        section = decoder.read_frame(view, pos)
        if header.section_lengths is not None and section.frame_len != header.section_lengths[i]:
            raise KVFormatError(f"section {section.index} is {section.frame_len} bytes, "
                                f"the header's index says {header.section_lengths[i]}")
        pos += section.frame_len
        yield section
    if pos != len(view):
        raise KVFormatError(f"KV blob has {len(view) - pos} unexpected trailing bytes")


def split_frames(blob: bytes | memoryview) -> list[memoryview]:
    """Cut a blob into its header frame and section frames (views, not copies), verifying
    only the framing; transports use it to ship a finished blob section by section."""
    view = memoryview(blob).cast("B")
    header, pos = unpack_header(view)
    frames = [view[:pos]]
    for _ in range(header.num_frames):
        section = unpack_section(view, pos, header.stream_id)
        frames.append(view[pos:pos + section.frame_len])
        pos += section.frame_len
    if pos != len(view):
        raise KVFormatError(f"KV blob has {len(view) - pos} unexpected trailing bytes")
    return frames


def assemble(encoder: KVStreamEncoder, frames: list[list]) -> bytes:
    """Header with an index of ``frames`` (each a list of buffers), then the frames, as one bytes."""
    lengths = tuple(sum(memoryview(b).nbytes for b in frame) for frame in frames)
    parts = [encoder.header_bytes(lengths)]
    for frame in frames:
        parts.extend(frame)
    return b"".join(parts)


def _section_frames(encoder: KVStreamEncoder, kv: torch.Tensor) -> list[list]:
    frames = []
    for index in range(encoder.num_sections):
        start, count = encoder.header.layer_range(index)
        frames.append(encoder.encode_section(index, kv[start:start + count]))
    return frames


def _num_tokens(kv: torch.Tensor, layout: Any) -> int:
    if not isinstance(kv, torch.Tensor) or kv.dim() != 5:
        raise ValueError(f"kv must be a [L, 2, T, H, D] tensor, got {getattr(kv, 'shape', type(kv))}")
    want = (layout.num_layers, 2, layout.num_kv_heads, layout.head_dim)
    got = (kv.shape[0], kv.shape[1], kv.shape[3], kv.shape[4])
    if got != want:
        raise ValueError(f"kv shape {tuple(kv.shape)} does not match layout [L, 2, T, H, D] = "
                         f"[{want[0]}, 2, T, {want[2]}, {want[3]}]")
    return int(kv.shape[2])
