"""The native CPU kernels: decode and prefill attention exact against SDPA on gathered keys,
the elementwise kernels against the torch ops they replace, the engine the same with and without
them, and the torch fallback when they cannot be built."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from engine import LLM, cpu_kernels
from engine_helpers import assert_fp32_close, greedy


def _reference(q, k_cache, v_cache, tables, lens, block_size, scale):
    """SDPA over each sequence's keys, gathered slot by slot (the definition)."""
    heads, kv_heads = q.shape[1], k_cache.shape[1]
    out = []
    for b, n in enumerate(lens):
        pos = torch.arange(n)
        slots = tables[b][pos // block_size] * block_size + pos % block_size
        k = k_cache[slots].transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
        v = v_cache[slots].transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
        out.append(F.scaled_dot_product_attention(q[b].unsqueeze(1), k, v, scale=scale).squeeze(1))
    return torch.stack(out)


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(6, 2, 64), (8, 8, 16), (4, 1, 128), (8, 4, 8)])
@pytest.mark.parametrize("block_size", [16, 5])
def test_paged_decode_attention_equals_sdpa_on_gathered_keys(heads, kv_heads, head_dim, block_size):
    gen = torch.Generator().manual_seed(heads * 1000 + head_dim + block_size)
    lens = [1, 3, 4, 17, block_size, block_size + 1, 130]        # tails of every length mod 4 and 8
    max_blocks = -(-max(lens) // block_size)
    num_blocks = len(lens) * max_blocks + 3
    # Blocks scattered over the cache in random order: nothing is consecutive by luck.
    tables = torch.randperm(num_blocks, generator=gen)[:len(lens) * max_blocks].view(len(lens), max_blocks)
    k_cache = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen)
    v_cache = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen)
    q = torch.randn(len(lens), heads, head_dim, generator=gen) * 3      # peaked softmaxes too
    scale = head_dim ** -0.5
    got = cpu_kernels.paged_decode_attention(q, k_cache, v_cache, tables.contiguous(),
                                             torch.tensor(lens), max(lens), block_size, scale)
    assert_fp32_close(got, _reference(q, k_cache, v_cache, tables, lens, block_size, scale))


def test_paged_decode_attention_keeps_tiny_weights_and_ignores_blocks_past_the_length():
    """Scores 90 apart (weights down to e^-90, flushed to ~0 in fp32) and garbage past each
    sequence's length: the result is the max-weight value, untouched by the garbage."""
    k_cache = torch.zeros(32, 1, 8)
    v_cache = torch.arange(32, dtype=torch.float32).view(32, 1, 1).expand(32, 1, 8).contiguous()
    k_cache[0, 0, 0], k_cache[1, 0, 0] = 10.0, -80.0
    k_cache[2:, 0, 0] = float("nan")                   # past the length: must never be read
    q = torch.zeros(1, 1, 8)
    q[0, 0, 0] = 1.0
    out = cpu_kernels.paged_decode_attention(q, k_cache, v_cache, torch.tensor([[0, 1]]),
                                             torch.tensor([2]), 2, 16, 1.0)
    assert torch.isfinite(out).all()
    assert_fp32_close(out, torch.zeros(1, 1, 8))


def test_paged_decode_attention_rejects_a_head_dim_it_cannot_vectorise():
    q, cache = torch.zeros(1, 2, 12), torch.zeros(16, 1, 12)
    with pytest.raises(ValueError, match="head_dim"):
        cpu_kernels.paged_decode_attention(q, cache, cache, torch.tensor([[0]]), torch.tensor([1]), 1, 16, 1.0)


def _prefill_reference(q, k_cache, v_cache, slots, scale):
    """Masked SDPA over gathered keys: query i at position len(slots) - n + i sees keys 0..it."""
    n, heads, kv_heads, kv_len = q.shape[0], q.shape[1], k_cache.shape[1], len(slots)
    k = k_cache[slots].transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
    v = v_cache[slots].transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
    mask = torch.arange(kv_len) <= torch.arange(kv_len - n, kv_len).unsqueeze(1)
    return F.scaled_dot_product_attention(q.transpose(0, 1), k, v, attn_mask=mask,
                                          scale=scale).transpose(0, 1)


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(6, 2, 64), (4, 4, 128), (8, 2, 8), (4, 2, 24)])
@pytest.mark.parametrize("n,kv_len", [(1, 1), (5, 5), (3, 70), (37, 37), (130, 130), (33, 300)])
def test_prefill_attention_equals_masked_sdpa_through_a_shuffled_block_table(heads, kv_heads, head_dim,
                                                                             n, kv_len):
    """A whole prompt (n == kv_len) and a chunk after cached keys (n < kv_len), through block
    tables in random order and from consecutive slots, with query rows strided as in the model."""
    block_size = 16
    gen = torch.Generator().manual_seed(heads * head_dim + n * 7 + kv_len)
    num_blocks = -(-kv_len // block_size) + 3
    k_cache = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen) * 2
    v_cache = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen)
    table = torch.randperm(num_blocks, generator=gen)[:-(-kv_len // block_size)]
    q = torch.randn(n, heads, 2 * head_dim, generator=gen)[..., :head_dim] * 3
    scale = head_dim ** -0.5
    slots = (table.repeat_interleave(block_size) * block_size +
             torch.arange(block_size).repeat(len(table)))[:kv_len]
    got = cpu_kernels.prefill_attention(q, k_cache, v_cache, table, 0, kv_len, block_size, scale)
    assert_fp32_close(got, _prefill_reference(q, k_cache, v_cache, slots, scale))
    got = cpu_kernels.prefill_attention(q, k_cache, v_cache, None, 5, kv_len, block_size, scale)
    assert_fp32_close(got, _prefill_reference(q, k_cache, v_cache, torch.arange(5, 5 + kv_len), scale))


def test_prefill_attention_never_reads_keys_after_the_last_query():
    """Keys past the chunk's last position hold NaN: causality means no query reads them."""
    k_cache, v_cache = torch.randn(64, 2, 16), torch.randn(64, 2, 16)
    q = torch.randn(10, 4, 16)
    slots = torch.arange(20)
    full = cpu_kernels.prefill_attention(q, k_cache, v_cache, None, 0, 20, 16, 0.25)
    k_cache[20:], v_cache[20:] = float("nan"), float("nan")
    again = cpu_kernels.prefill_attention(q, k_cache, v_cache, None, 0, 20, 16, 0.25)
    assert torch.equal(full, again) and torch.isfinite(again).all()
    assert_fp32_close(again, _prefill_reference(q, k_cache, v_cache, slots, 0.25))


def test_prefill_attention_rejects_what_it_cannot_compute():
    cache = torch.zeros(32, 1, 12)
    with pytest.raises(ValueError, match="head_dim"):
        cpu_kernels.prefill_attention(torch.zeros(2, 2, 12), cache, cache, None, 0, 2, 16, 1.0)
    cache = torch.zeros(32, 1, 16)
    with pytest.raises(ValueError, match="queries over"):
        cpu_kernels.prefill_attention(torch.zeros(3, 2, 16), cache, cache, None, 0, 2, 16, 1.0)
    with pytest.raises(ValueError, match="cover kv_len"):
        cpu_kernels.prefill_attention(torch.zeros(3, 2, 16), cache, cache, torch.tensor([0]), 0, 20, 16, 1.0)


@pytest.mark.parametrize("out,inp", [(1, 16), (7, 64), (8, 384), (37, 1024), (513, 48)])
def test_gemv_equals_f_linear_with_and_without_bias(out, inp):
    """Rows in blocks of 8 and a tail, one row of input as the model passes it ([1, in])."""
    gen = torch.Generator().manual_seed(out * inp)
    w = torch.randn(out, inp, generator=gen) * 0.1
    x, b = torch.randn(1, inp, generator=gen) * 3, torch.randn(out, generator=gen)
    assert cpu_kernels.gemv_fits(x, w)
    assert_fp32_close(cpu_kernels.gemv(x, w, b), F.linear(x, w, b))
    assert_fp32_close(cpu_kernels.gemv(x, w, None), F.linear(x, w))


def test_gemv_refuses_what_it_cannot_take():
    w = torch.zeros(8, 24)                                   # in not a multiple of 16
    assert not cpu_kernels.gemv_fits(torch.zeros(1, 24), w)
    with pytest.raises(ValueError, match="one float32 row"):
        cpu_kernels.gemv(torch.zeros(1, 24), w, None)
    assert not cpu_kernels.gemv_fits(torch.zeros(2, 32), torch.zeros(8, 32))       # two rows
    assert not cpu_kernels.gemv_fits(torch.zeros(1, 32), torch.zeros(32, 8).t())   # strided weight


def test_the_engine_routes_one_row_through_the_gemv_unless_switched_off(monkeypatch):
    from engine.matmul import MatmulPlan
    monkeypatch.setenv("TANDEM_GEMV", "1")
    assert MatmulPlan.choose(torch.device("cpu"), torch.float32, None).gemv
    monkeypatch.setenv("TANDEM_GEMV", "0")
    assert not MatmulPlan.choose(torch.device("cpu"), torch.float32, None).gemv
    assert not MatmulPlan.choose(torch.device("cpu"), torch.bfloat16, None).gemv


@pytest.mark.parametrize("rows,dim", [(1, 384), (7, 20), (33, 64)])
def test_rms_norm_equals_the_torch_formula_on_strided_rows(rows, dim):
    gen = torch.Generator().manual_seed(rows + dim)
    wide = torch.randn(rows, dim + 5, generator=gen) * 3
    x, w = wide[:, :dim], torch.randn(dim, generator=gen)
    ref = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    assert_fp32_close(cpu_kernels.rms_norm(x, w, 1e-6), ref)


@pytest.mark.parametrize("rows,inter", [(1, 1024), (5, 13), (64, 160)])
def test_silu_mul_equals_torch_including_large_and_tiny_gates(rows, inter):
    gen = torch.Generator().manual_seed(rows * inter)
    gate_up = torch.randn(rows, 2 * inter, generator=gen) * 8
    gate_up[0, :4] = torch.tensor([-100.0, 100.0, 0.0, -1e-30])     # saturation, zero, denormal
    ref = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
    assert_fp32_close(cpu_kernels.silu_mul(gate_up), ref)


@pytest.mark.parametrize("heads,dim", [(8, 64), (3, 8), (5, 128)])
def test_rope_equals_rotate_half_on_a_strided_view(heads, dim):
    gen = torch.Generator().manual_seed(heads * dim)
    n = 9
    fused = torch.randn(n, (heads + 2) * dim, generator=gen)     # like qkv's output
    x = fused[:, :heads * dim].view(n, heads, dim)                  # rows strided, as in the model
    angles = torch.rand(n, 1, dim, generator=gen) * 6
    cos, sin = angles.cos(), angles.sin()
    rot = torch.cat((-x[..., dim // 2:], x[..., :dim // 2]), dim=-1)
    assert_fp32_close(cpu_kernels.rope(x, cos, sin), x * cos + rot * sin)


def _set_gemv(llm, on: bool) -> None:
    """The one-row GEMV on or off for every matmul of the model (whatever the CPU vendor)."""
    import dataclasses

    from engine.matmul import Linear
    model = llm.engine.runner.model
    model.matmul = dataclasses.replace(model.matmul, gemv=on)
    for module in model.modules():
        if isinstance(module, Linear):
            module.plan = model.matmul


def _torch_only(llm) -> None:
    from engine.model import DecoderLayer, RMSNorm
    llm.engine.runner.native_decode = llm.engine.runner.native_prefill = False
    _set_gemv(llm, False)
    for module in llm.engine.runner.model.modules():
        if isinstance(module, (RMSNorm, DecoderLayer)):
            module.native = False


def test_the_engine_decodes_the_same_tokens_with_and_without_the_kernels():
    assert cpu_kernels.available(), "the kernels must build on a machine with a C compiler"
    prompts = [[1] + list(range(5, 5 + n)) for n in (3, 40, 97, 200)]
    outs, logits = {}, {}
    for native in (True, False):
        llm = LLM("tiny-llama-gqa", max_num_seqs=8)
        assert llm.engine.runner.native_decode and llm.engine.runner.native_prefill  # CPU, float32
        assert llm.engine.runner.model.layers[0].native and llm.engine.runner.model.norm.native
        if native:
            _set_gemv(llm, True)
        else:
            _torch_only(llm)
        outs[native] = [o.token_ids for o in llm.generate(prompts, greedy(48, ignore_eos=True))]
        logits[native] = llm.engine.prompt_logits(prompts[2])
    assert outs[True] == outs[False]
    assert_fp32_close(logits[True], logits[False])


def test_a_head_dim_the_kernel_cannot_take_decodes_on_the_torch_path(tmp_path):
    """head_dim 12 is not a multiple of the kernel's 8-wide vectors: the engine keeps SDPA
    for decode and still generates (batched, so the padded, masked path runs)."""
    from hf_checkpoints import random_hf_model, save_checkpoint
    model_dir = save_checkpoint(random_hf_model("tiny-llama-gqa", seed=3, head_dim=12), tmp_path / "m")
    llm = LLM(str(model_dir), max_num_seqs=4)
    assert llm.engine.model_config.head_dim == 12 and not llm.engine.runner.native_decode
    outs = llm.generate([[1, 5, 6], [1] + list(range(7, 40))], greedy(6, ignore_eos=True))
    assert [len(o.token_ids) for o in outs] == [6, 6]


def test_a_missing_compiler_leaves_the_torch_path_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("TANDEM_KERNEL_CACHE", str(tmp_path / "cache"))
    cpu_kernels._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="engine.cpu_kernels"):
            assert not cpu_kernels.available()
            llm = LLM("tiny-llama-gqa")
        assert not llm.engine.runner.native_decode and not llm.engine.runner.model.norm.native
        assert "CPU kernels unavailable" in caplog.text
        out = llm.generate([[1, 5, 6, 7]], greedy(8, ignore_eos=True))[0]
        assert len(out.token_ids) == 8
    finally:
        monkeypatch.undo()
        cpu_kernels._library.cache_clear()
    assert cpu_kernels.available()


def test_the_kernel_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    cpu_kernels._library.cache_clear()
    try:
        assert not cpu_kernels.available()
    finally:
        monkeypatch.undo()
        cpu_kernels._library.cache_clear()
