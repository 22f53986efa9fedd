"""Lossless entropy stages applied to a codec's payload: ``zstd`` and ``lz4``.

A stage is chosen per blob (recorded in the header) and applied to every section's
payload. Decompression is always bounded by the size the section frame declares, which
the wire layer has already checked against the codec's own bound: a crafted blob cannot
make the receiver inflate more than the codec could legitimately produce.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import lz4.block
import zstandard

from kv_transfer.codecs.base import Buffer
from kv_transfer.errors import KVFormatError, UnknownCodecError


class EntropyStage(ABC):
    """Compresses a payload (given as buffers) into one bytes object, and back."""

    name: ClassVar[str]

    @abstractmethod
    def compress(self, buffers: Sequence[Buffer], total: int) -> bytes:
        """Compress the concatenation of ``buffers`` (``total`` bytes)."""

    @abstractmethod
    def decompress(self, data: memoryview, raw_size: int) -> bytes:
        """Exactly ``raw_size`` bytes back; KVFormatError on anything else."""


class ZstdStage(EntropyStage):
    """zstd at level 1: the best ratio per CPU second on KV codes (level 3 was both slower
    and larger on quantized codes, see docs/kv_transfer.md)."""

    name = "zstd"

    def __init__(self, level: int = 1):
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._decompressor = zstandard.ZstdDecompressor()

    def compress(self, buffers: Sequence[Buffer], total: int) -> bytes:
        if len(buffers) == 1:
            return self._compressor.compress(buffers[0])
        stream = self._compressor.compressobj(size=total)
        parts = [stream.compress(b) for b in buffers]
        parts.append(stream.flush())
        return b"".join(parts)

    def decompress(self, data: memoryview, raw_size: int) -> bytes:
        try:
            params = zstandard.get_frame_parameters(data)
            if params.content_size != raw_size:
                raise KVFormatError(f"zstd frame holds {params.content_size} bytes, section declares {raw_size}")
            out = self._decompressor.decompress(data, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise KVFormatError(f"zstd payload does not decompress: {exc}") from None
        if len(out) != raw_size:
            raise KVFormatError(f"zstd payload decompressed to {len(out)} bytes, expected {raw_size}")
        return out


class Lz4Stage(EntropyStage):
    """lz4 block format (size stored in the section frame, not in the block)."""

    name = "lz4"

    def compress(self, buffers: Sequence[Buffer], total: int) -> bytes:
        data = buffers[0] if len(buffers) == 1 else b"".join(memoryview(b).cast("B") for b in buffers)
        return lz4.block.compress(data, store_size=False)

    def decompress(self, data: memoryview, raw_size: int) -> bytes:
        try:
            out = lz4.block.decompress(data, uncompressed_size=raw_size)
        except (lz4.block.LZ4BlockError, ValueError) as exc:
            raise KVFormatError(f"lz4 payload does not decompress: {exc}") from None
        if len(out) != raw_size:
            raise KVFormatError(f"lz4 payload decompressed to {len(out)} bytes, expected {raw_size}")
        return out


_STAGES: dict[str, type[EntropyStage]] = {"zstd": ZstdStage, "lz4": Lz4Stage}


def get_entropy_stage(name: str) -> EntropyStage:
    """A fresh stage by name (stages hold (de)compression contexts: one per thread)."""
    try:
        return _STAGES[name]()
    except (KeyError, TypeError):
        raise UnknownCodecError(f"unknown entropy stage {name!r}; available: {available_entropy_stages()}") from None


def available_entropy_stages() -> list[str]:
    return sorted(_STAGES)
