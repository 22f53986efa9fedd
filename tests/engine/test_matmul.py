"""Matmul paths: float32 stays exact; bfloat16 matmuls on AMX are close and really bfloat16;
without AMX the option says so and keeps float32."""
from __future__ import annotations

import logging

import pytest
import torch

from engine import LLM, EngineConfig
from engine.matmul import MatmulPlan, cpu_has_amx_bf16

STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
         "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.")


def test_float32_is_the_default_matmul_path():
    llm = LLM("stories260K")
    assert llm.engine.runner.model.matmul.mode in ("torch", "onednn")
    assert LLM("stories260K", matmul_dtype="float32").engine.runner.model.matmul.mode in ("torch", "onednn")


def test_bfloat16_matmuls_follow_the_cpu(caplog):
    """With AMX: logits within bfloat16's precision of float32's, not equal to them (the path
    is really bf16), and teacher-forced top-1 the same at >= 95% of positions. Without AMX:
    a warning, and float32 exactly."""
    exact = LLM("stories260K")
    with caplog.at_level(logging.WARNING, logger="engine.matmul"):
        fast = LLM("stories260K", matmul_dtype="bfloat16")
    ids = exact.tokenizer.encode(STORY)
    ref = exact.engine.prompt_logits(ids)
    got = fast.engine.prompt_logits(ids)
    if not cpu_has_amx_bf16():
        assert "needs a CPU with AMX" in caplog.text
        assert fast.engine.runner.model.matmul.mode in ("torch", "onednn")
        torch.testing.assert_close(got, ref, atol=0, rtol=0)
        return
    assert fast.engine.runner.model.matmul.mode == "bf16-amx"
    assert not torch.equal(got, ref)
    spread = float(ref.std())
    assert float((got - ref).abs().mean()) < 0.05 * spread
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agree >= 0.95, agree


def test_a_bfloat16_model_ignores_the_option():
    plan = MatmulPlan.choose(torch.device("cpu"), torch.bfloat16, "bfloat16")
    assert plan.mode == "torch"


@pytest.mark.parametrize("bad", ["fp8", "bf16", 16])
def test_an_unknown_matmul_dtype_is_rejected(bad):
    with pytest.raises(ValueError, match="matmul_dtype"):
        EngineConfig(matmul_dtype=bad)
