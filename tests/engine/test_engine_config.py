"""EngineConfig validation: bad knobs fail at construction with the knob named."""
from __future__ import annotations

import pytest
import torch

from engine import LLM, EngineConfig

from engine_helpers import greedy


@pytest.mark.parametrize("kwargs, field", [
    ({"block_size": 0}, "block_size"),
    ({"max_num_seqs": 0}, "max_num_seqs"),
    ({"max_num_batched_tokens": -1}, "max_num_batched_tokens"),
    ({"num_kv_blocks": 1}, "num_kv_blocks"),
    ({"num_threads": 0}, "num_threads"),
    ({"device": "tpu"}, "device"),
    ({"dtype": "int4"}, "dtype"),
])
def test_bad_engine_knobs_raise_value_error_naming_them(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**kwargs)


def test_too_few_kv_blocks_for_one_context_is_rejected():
    with pytest.raises(ValueError, match="num_kv_blocks"):
        LLM("stories260K", num_kv_blocks=8)          # 512-token context needs 33 blocks of 16


def test_max_model_len_caps_the_context():
    llm = LLM("stories260K", max_model_len=64)
    assert llm.engine.max_model_len == 64
    with pytest.raises(ValueError, match="context"):
        llm.generate([[1] * 64], greedy(4))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        LLM("stories260K", device="cuda")
