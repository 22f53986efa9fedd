"""``raw``: the engine's KV bytes as they are. Lossless, bit-exact, no arithmetic."""
from __future__ import annotations

import torch

from kv_transfer.codecs.base import GroupShape, KVCodec, expect_size, register_codec
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
               device: torch.device | str = "cpu") -> torch.Tensor:
        expect_size(payload, self.max_encoded_size(shape, dtype), self.name)
        reader = PayloadReader(payload, self.name)
        return reader.tensor(dtype, shape.dims, device)

    def max_encoded_size(self, shape: GroupShape, dtype: torch.dtype) -> int:
        return shape.numel * torch.empty((), dtype=dtype).element_size()
