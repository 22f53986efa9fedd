"""Values at rest: one stored chunk is one kv_transfer wire blob (codec + checksum).

No pickle: a value is bytes in our wire format and nothing else is ever deserialised. A
blob that does not decode, fails its checksum, names another model or has the wrong
shape raises ``CorruptEntry``; callers delete it and recompute.
"""
from __future__ import annotations

import logging

import torch

from engine.kv_export import KVLayout

logger = logging.getLogger(__name__)


class CorruptEntry(Exception):
    """A stored value failed to decode or verify (recoverable: delete and recompute)."""


class ValueCodec:
    """Encodes ``[L, 2, n, H, D]`` chunks to wire blobs and back, for one layout."""

    def __init__(self, layout: KVLayout, codec: str = "raw", entropy: str | None = None) -> None:
        from kv_transfer import wire  # the other half of kv_transfer; imported when used
        self._wire = wire
        self.layout = layout
        self.codec = codec
        self.entropy = entropy
        self.dtype = getattr(torch, layout.dtype)

    def encode(self, kv: torch.Tensor) -> bytes:
        """One chunk's KV as a self-describing, checksummed blob."""
        self._check_shape(kv, None)
        return self._wire.encode_kv(kv.contiguous(), self.layout, codec=self.codec,
                                    entropy=self.entropy)

    def decode(self, blob: bytes | bytearray | memoryview, num_tokens: int) -> torch.Tensor:
        """The KV of one stored chunk of ``num_tokens`` tokens; ``CorruptEntry`` otherwise."""
        try:
            kv = self._wire.decode_kv(bytes(blob), self.layout)
        except Exception as exc:  # any failure on untrusted bytes is a corrupt entry
            raise CorruptEntry(f"{type(exc).__name__}: {exc}") from exc
        try:
            self._check_shape(kv, num_tokens)
        except ValueError as exc:
            raise CorruptEntry(str(exc)) from exc
        if kv.dtype != self.dtype:
            raise CorruptEntry(f"decoded dtype {kv.dtype} != layout dtype {self.dtype}")
        return kv

    def _check_shape(self, kv: torch.Tensor, num_tokens: int | None) -> None:
        lay = self.layout
        want = (lay.num_layers, 2, kv.shape[2] if num_tokens is None else num_tokens,
                lay.num_kv_heads, lay.head_dim)
        if kv.dim() != 5 or tuple(kv.shape) != want:
            raise ValueError(f"KV shape {tuple(kv.shape)} does not match {want}")
