"""The GPU seam of the codecs: encode where the KV lives, decode straight into device memory.
Skipped only when CUDA is absent."""
from __future__ import annotations

import pytest
import torch

from kv_transfer.codecs import GroupShape, get_codec
from tests.kv_transfer.samples import synthetic_kv

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("name", ["raw", "int8", "kivi4", "kivi2", "ecq"])
def test_codecs_encode_on_the_gpu_and_decode_into_gpu_memory(name):
    kv = synthetic_kv(tokens=96, dtype=torch.float16)
    codec = get_codec(name)
    cpu_payload = b"".join(bytes(memoryview(b)) for b in codec.encode(kv))
    gpu_payload = b"".join(bytes(memoryview(b)) for b in codec.encode(kv.cuda()))
    shape = GroupShape.of(kv)
    out = torch.empty(shape.dims, dtype=torch.float16, device="cuda")
    decoded = codec.decode(memoryview(gpu_payload), shape, torch.float16, "cuda", out=out)
    assert decoded.device.type == "cuda" and decoded.data_ptr() == out.data_ptr()
    reference = codec.decode(memoryview(cpu_payload), shape, torch.float16)
    assert torch.allclose(decoded.cpu().float(), reference.float(), atol=2e-2, rtol=1e-2)
