"""Loading checkpoints: unsupported configs fail naming the field, missing files name the
path, sharded == single-file, every supported dtype works, presets are deterministic."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import LLM, ModelLoadError, UnsupportedModelError
from engine.config import ModelConfig
from engine.presets import PRESETS, preset_config

from engine_helpers import greedy
from hf_checkpoints import edit_config

IDS = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421]


@pytest.mark.parametrize("changes, field", [
    ({"architectures": ["GPT2LMHeadModel"]}, "architectures"),
    ({"architectures": None}, "architectures"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling"),
    ({"rope_scaling": {"rope_type": "linear", "factor": -1.0}}, "rope_scaling.factor"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"hidden_size": None}, "hidden_size"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"mlp_bias": True}, "mlp_bias"),
])
def test_unsupported_config_fails_at_load_naming_the_field(stories_copy, changes, field):
    edit_config(stories_copy, **changes)
    with pytest.raises(ModelLoadError, match=field.replace(".", r"\.")):
        LLM(str(stories_copy))


def test_unsupported_checkpoint_dtype_fails_at_load(stories_copy):
    edit_config(stories_copy, torch_dtype="int8")
    with pytest.raises(ValueError, match="dtype.*int8"):
        LLM(str(stories_copy))


def test_unsupported_architecture_is_an_unsupported_model_error(stories_copy):
    edit_config(stories_copy, architectures=["FalconForCausalLM"])
    with pytest.raises(UnsupportedModelError, match="FalconForCausalLM"):
        LLM(str(stories_copy))


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_a_missing_file_fails_with_its_path(stories_copy, name):
    (stories_copy / name).unlink()
    with pytest.raises(ModelLoadError) as err:
        LLM(str(stories_copy))
    assert str(stories_copy) in str(err.value)
    if name != "model.safetensors":
        assert str(stories_copy / name) in str(err.value)


def test_a_missing_directory_or_unknown_name_fails_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match=str(tmp_path / "nope")):
        LLM(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="unknown model"):
        LLM("no-such-preset")


def test_a_tensor_of_the_wrong_shape_is_named(stories_copy):
    path = stories_copy / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.2.mlp.up_proj.weight"] = torch.zeros(10, 64)
    save_file(tensors, path)
    with pytest.raises(ModelLoadError, match=r"model\.layers\.2\.mlp\.up_proj\.weight"):
        LLM(str(stories_copy))


def test_a_missing_tensor_is_named(stories_copy):
    path = stories_copy / "model.safetensors"
    tensors = load_file(path)
    del tensors["model.layers.3.post_attention_layernorm.weight"]
    save_file(tensors, path)
    with pytest.raises(ModelLoadError, match=r"layers\.3\.post_norm"):
        LLM(str(stories_copy))


def _shard(model_dir) -> None:
    """Rewrite model.safetensors as an index plus two shards, the way HF lays them out."""
    tensors = load_file(model_dir / "model.safetensors")
    (model_dir / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for fname, part in halves.items():
        save_file({n: tensors[n] for n in part}, model_dir / fname, metadata={"format": "pt"})
        weight_map |= {n: fname for n in part}
    (model_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))


def test_sharded_safetensors_load_the_same_as_single_file(stories, stories_copy):
    _shard(stories_copy)
    sharded = LLM(str(stories_copy))
    assert torch.equal(sharded.engine.prompt_logits(IDS), stories.engine.prompt_logits(IDS))
    assert sharded.generate([[1]], greedy(30))[0].token_ids == stories.generate([[1]], greedy(30))[0].token_ids


def test_a_missing_shard_fails_with_its_path(stories_copy):
    _shard(stories_copy)
    missing = stories_copy / "model-00002-of-00002.safetensors"
    missing.unlink()
    with pytest.raises(ModelLoadError, match=str(missing)):
        LLM(str(stories_copy))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_every_supported_dtype_loads_and_runs(stories, dtype):
    llm = LLM("stories260K", dtype=dtype)
    torch_dtype = getattr(torch, dtype)
    assert all(p.dtype == torch_dtype for p in llm.engine.loaded.model.parameters())
    assert llm.engine.runner.kv_cache.dtype == torch_dtype
    assert llm.engine.kv_layout.dtype == dtype
    ref = stories.engine.prompt_logits(IDS)
    got = llm.engine.prompt_logits(IDS)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    tol = 0.0 if dtype == "float32" else 0.05 * ref.abs().max().item()
    assert (got - ref).abs().max().item() <= tol
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
    out = llm.generate([[1]], greedy(24))[0]
    assert out.text.startswith("Once upon a time")


def test_dtype_aliases_and_bad_dtypes():
    assert LLM("stories260K", dtype="bf16").engine.kv_layout.dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        LLM("stories260K", dtype="float64")


def test_random_presets_are_deterministic_for_a_seed():
    def weights(seed):
        llm = LLM("tiny-llama-gqa", seed=seed)
        return llm.engine.loaded.model.state_dict(), llm.engine.kv_layout.model_fingerprint

    a, fa = weights(0)
    b, fb = weights(0)
    c, fc = weights(1)
    assert fa == fb != fc
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if not k.endswith("norm.weight"))


def test_preset_shapes():
    cfg = ModelConfig.from_hf(preset_config("llama-100m"))
    assert 90e6 < cfg.num_params < 110e6
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
            cfg.vocab_size) == (768, 12, 12, 4, 64, 32000)
    for name in PRESETS:
        ModelConfig.from_hf(preset_config(name))      # every preset parses


def test_loading_never_unpickles(stories_copy):
    """A .bin (pickle) checkpoint beside no safetensors is refused, not loaded."""
    (stories_copy / "model.safetensors").rename(stories_copy / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        LLM(str(stories_copy))


def test_a_tied_checkpoint_that_also_stores_lm_head_loads(stories, stories_copy):
    path = stories_copy / "model.safetensors"
    tensors = load_file(path)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, path)
    llm = LLM(str(stories_copy))
    assert torch.equal(llm.engine.prompt_logits(IDS), stories.engine.prompt_logits(IDS))
