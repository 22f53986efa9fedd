"""The same engine code on a CUDA device: same text, same logits, KV moves CPU <-> GPU."""
from __future__ import annotations

import pytest
import torch

from engine import LLM

from engine_helpers import STORIES_REFERENCE, greedy, run_to_completion

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

IDS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421]


def test_cuda_greedy_reproduces_the_reference_and_matches_cpu_logits():
    gpu = LLM("stories260K", device="cuda")
    cpu = LLM("stories260K")
    assert gpu.engine.runner.kv_cache.is_cuda
    out = gpu.generate([[1], IDS], greedy(60))
    assert out[0].text.startswith(STORIES_REFERENCE)
    assert out[1].token_ids == cpu.generate([IDS], greedy(60))[0].token_ids
    torch.testing.assert_close(gpu.engine.prompt_logits(IDS).cpu(), cpu.engine.prompt_logits(IDS),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_half_precision_runs(dtype):
    out = LLM("stories260K", device="cuda", dtype=dtype).generate([[1]], greedy(16))[0]
    assert out.text.startswith("Once upon a time")


def test_kv_exported_on_cuda_continues_on_cpu():
    gpu, cpu = LLM("stories260K", device="cuda"), LLM("stories260K")
    want = cpu.generate([IDS], greedy(30))[0].token_ids
    gpu.engine.add_request("m", IDS, greedy(30), prefill_only=True)
    while not gpu.engine.step():
        pass
    seq_kv = gpu.engine.export_kv("m")
    gpu.engine.release("m")
    assert seq_kv.kv.device.type == "cpu"
    cpu.engine.import_kv(seq_kv)
    assert run_to_completion(cpu.engine)["m"].token_ids == want
