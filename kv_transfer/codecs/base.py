"""The codec plug-in point: a small ABC and a registry by name.

A codec turns one *layer group* of KV, a tensor ``[l, 2, T, H, D]`` (l layers, keys then
values, T tokens, H KV heads, D head dim), into a payload of bytes and back. The wire
format stores the codec's name and its parameters (JSON) in the blob header, so a
receiver rebuilds the same codec with ``get_codec(name, **params)``; every codec therefore
validates its parameters as if they came from the network (they do).

Codecs never see token counts of zero (the wire format skips them) and never see tensors
of another shape than the ``GroupShape`` they are asked to decode.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from kv_transfer.errors import KVFormatError

logger = logging.getLogger(__name__)

#: anything the wire layer can write: bytes, bytearray, memoryview, a numpy array
Buffer = Any


@dataclass(frozen=True, slots=True)
class GroupShape:
    """Shape of one layer group: ``[num_layers, 2, num_tokens, num_kv_heads, head_dim]``."""
    num_layers: int
    num_tokens: int
    num_kv_heads: int
    head_dim: int

    @property
    def dims(self) -> tuple[int, int, int, int, int]:
        return (self.num_layers, 2, self.num_tokens, self.num_kv_heads, self.head_dim)

    @property
    def numel(self) -> int:
        return self.num_layers * 2 * self.num_tokens * self.num_kv_heads * self.head_dim

    @classmethod
    def of(cls, kv: torch.Tensor) -> "GroupShape":
        if kv.dim() != 5 or kv.shape[1] != 2:
            raise ValueError(f"expected a KV group [l, 2, T, H, D], got shape {tuple(kv.shape)}")
        return cls(int(kv.shape[0]), int(kv.shape[2]), int(kv.shape[3]), int(kv.shape[4]))


class KVCodec(ABC):
    """Encodes a layer group of KV into bytes and back.

    Subclasses set ``name`` and ``lossless``, take their parameters as keyword arguments
    (validated with ValueError) and report them back through ``params()`` so that
    ``get_codec(codec.name, **codec.params())`` rebuilds an equivalent codec.
    """

    name: ClassVar[str]
    lossless: ClassVar[bool]

    def params(self) -> dict[str, Any]:
        """JSON-serialisable parameters; what the wire header records."""
        return {}

    @abstractmethod
    def encode(self, kv: torch.Tensor) -> list[Buffer]:
        """Encode ``kv`` ``[l, 2, T, H, D]`` (T >= 1) into buffers whose concatenation is the payload."""

    @abstractmethod
    def decode(self, payload: memoryview, shape: GroupShape, dtype: torch.dtype,
               device: torch.device | str = "cpu", out: torch.Tensor | None = None) -> torch.Tensor:
        """Rebuild ``[l, 2, T, H, D]`` in ``dtype`` on ``device`` (written into ``out`` and
        returned when given: saves an allocation and a copy); KVFormatError if ``payload``
        cannot be this codec's encoding of ``shape``."""

    @abstractmethod
    def max_encoded_size(self, shape: GroupShape, dtype: torch.dtype) -> int:
        """An upper bound on the payload size for ``shape``: the decoder refuses larger claims."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def check_int(params: dict[str, Any], key: str, lo: int, hi: int) -> int:
    """Validate an integer parameter (bools are not integers here)."""
    value = params[key]
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"codec parameter {key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_float(params: dict[str, Any], key: str, lo: float, hi: float) -> float:
    """Validate a finite float parameter in [lo, hi]."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"codec parameter {key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def expect_size(payload: memoryview | bytes, expected: int, codec: str) -> None:
    """KVFormatError unless the payload is exactly ``expected`` bytes."""
    if len(payload) != expected:
        raise KVFormatError(f"{codec} payload is {len(payload)} bytes, expected {expected}")

