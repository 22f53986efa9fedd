"""``raw``: the engine's KV bytes as they are. Lossless, bit-exact, no arithmetic."""
from __future__ import annotations

import torch

from kv_transfer.codecs.base import GroupShape, KVCodec, expect_size
from kv_transfer.codecs.registry import register_codec
from kv_transfer.codecs.quant import PayloadReader, as_bytes


@register_codec
class RawCodec(KVCodec):
    """Lossless: the tensor's bytes in its own dtype (little-endian, C order).

    Size: ``numel * itemsize`` (1x vs fp16 for fp16/bf16 engines, 0.5x for float32).
    Quality floor: bit-exact (teacher-forced and greedy agreement 100%).
    """

    name = "raw"
    lossless = True

    def encode(self, kv: torch.Tensor) -> list:
        return [as_bytes(kv)]

    def decode(self, payload: memoryview, shape: GroupShape, dtype: torch.dtype,
               device: torch.device | str = "cpu", out: torch.Tensor | None = None) -> torch.Tensor:
        expect_size(payload, self.max_encoded_size(shape, dtype), self.name)
        reader = PayloadReader(payload, self.name)
        if out is None:
            return reader.tensor(dtype, shape.dims, device)
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[out.element_size()]
        reader.cast_into(bits, out.view(bits))     # a plain copy of the bytes, no conversion
        return out

    def max_encoded_size(self, shape: GroupShape, dtype: torch.dtype) -> int:
        return shape.numel * torch.empty((), dtype=dtype).element_size()
