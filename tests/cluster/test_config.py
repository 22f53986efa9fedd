"""The typed cluster config: defaults, YAML, overrides, errors that name the field."""
from __future__ import annotations

import pytest
import yaml

from cluster.config import ClusterConfig, ConfigError, PoolConfig, load_config


def test_defaults_are_valid_and_run_the_embedded_model():
    cfg = load_config()
    assert cfg.model.model == "stories260K"
    assert cfg.mode == "disaggregated"
    assert cfg.kv_transfer.codec == "raw"
    assert cfg.router.grpc_port == 50051
    assert cfg.store.url is None
    ClusterConfig().validate()


def test_yaml_file_and_overrides_are_applied_with_types(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({
        "mode": "colocated",
        "pools": {"prefill": {"workers": 2, "cpus_per_worker": 0.5}},
        "store": {"url": "redis://127.0.0.1:6390", "chunk_size": 64},
    }))
    cfg = load_config(path, ["pools.decode.workers=3", "router.grpc_port=0",
                             "kv_transfer.entropy=zstd", "store.enabled=false",
                             "model.num_kv_blocks=null", "slo.ttft_ms=250"])
    assert cfg.mode == "colocated"
    assert cfg.pools.prefill == PoolConfig(workers=2, cpus_per_worker=0.5)
    assert cfg.pools.decode.workers == 3
    assert cfg.router.grpc_port == 0
    assert cfg.kv_transfer.entropy == "zstd"
    assert cfg.store.enabled is False and cfg.store.chunk_size == 64
    assert cfg.slo.ttft_ms == 250.0 and isinstance(cfg.slo.ttft_ms, float)


def test_override_wins_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pools:\n  prefill:\n    workers: 2\n")
    assert load_config(path, ["pools.prefill.workers=5"]).pools.prefill.workers == 5


@pytest.mark.parametrize("override, path", [
    ("pools.prefil.workers=1", "pools.prefil"),
    ("pools.prefill.wrokers=1", "pools.prefill.wrokers"),
    ("bogus=1", "bogus"),
    ("router.grpc_port.x=1", "router.grpc_port"),
])
def test_unknown_key_names_its_path(override, path):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}:")


def test_unknown_key_in_yaml_names_its_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("store:\n  chunk_size: 256\n  redis_url: redis://x\n")
    with pytest.raises(ConfigError, match=r"^store\.redis_url: unknown key"):
        load_config(path)


@pytest.mark.parametrize("override, path, words", [
    ("pools.prefill.workers=0", "pools.prefill.workers", "must be >= 1, got 0"),
    ("pools.decode.cpus_per_worker=0", "pools.decode.cpus_per_worker", "must be > 0"),
    ("pools.decode.gpus_per_worker=-1", "pools.decode.gpus_per_worker", "must be >= 0"),
    ("model.dtype=int8", "model.dtype", "must be one of"),
    ("model.device=tpu", "model.device", "must be 'auto'"),
    ("model.block_size=true", "model.block_size", "must be an integer"),
    ("model.max_num_seqs=2.5", "model.max_num_seqs", "must be an integer"),
    ("mode=split", "mode", "must be one of"),
    ("router.grpc_port=70000", "router.grpc_port", "must be a port"),
    ("router.request_timeout_s=-1", "router.request_timeout_s", "must be > 0"),
    ("router.prefill_policy=bad name", "router.prefill_policy", "must be a name"),
    ("store.url=http://localhost", "store.url", "must start with redis://"),
    ("store.enabled=maybe", "store.enabled", "must be true or false"),
    ("store.chunk_size=100", "store.chunk_size", "multiple of model.block_size"),
    ("slo.tpot_ms=.nan", "slo.tpot_ms", "finite number"),
    ("kv_transfer.codec=", "kv_transfer.codec", "non-empty string"),
    ("kv_transfer.entropy=brotli", "kv_transfer.entropy", "must be one of"),
    ("model.matmul_dtype=fp8", "model.matmul_dtype", "must be one of"),
    ("kv_transfer.transport=null", "kv_transfer.transport", "non-empty string"),
    ("model=stories", "model", "must be a mapping"),
    ("ray.keep_pools=true", "ray.keep_pools", "needs ray.address"),
])
def test_bad_value_names_its_path(override, path, words):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.path == path
    assert words in str(info.value)


@pytest.mark.parametrize("override", ["no_equals_sign", "=3", "a..b=1", "a b=1"])
def test_malformed_override_is_rejected(override):
    with pytest.raises(ConfigError, match="a.b.c=value"):
        load_config(None, [override])


def test_yaml_round_trip_is_lossless(tmp_path):
    cfg = load_config(None, ["pools.prefill.workers=4", "store.url=redis://h:1",
                             "model.num_kv_blocks=64", "kv_transfer.entropy=lz4"])
    path = tmp_path / "out.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(path) == cfg
    assert ClusterConfig.from_dict(cfg.to_dict()) == cfg


def test_config_error_is_a_value_error_and_file_errors_are_typed(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping at the top level"):
        load_config(bad)
    bad.write_text("pools: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_values_set_in_code_are_checked_by_validate():
    cfg = ClusterConfig()
    cfg.pools.decode.workers = -2
    with pytest.raises(ConfigError, match=r"^pools\.decode\.workers: must be >= 1"):
        cfg.validate()
    cfg = ClusterConfig()
    cfg.router.grpc_port = "50051"
    with pytest.raises(ConfigError, match=r"^router\.grpc_port: must be an integer"):
        cfg.validate()


def test_require_choice_checks_a_registry_name_with_its_path():
    cfg = load_config(None, ["router.decode_policy=fastest"])
    cfg.require_choice("router.prefill_policy", ["prefix_aware", "round_robin"])
    with pytest.raises(ConfigError, match=r"^router\.decode_policy: unknown name 'fastest'"):
        cfg.require_choice("router.decode_policy", ["least_loaded", "round_robin"])


def test_docs_config_lists_every_field_with_its_default():
    import re
    from pathlib import Path

    from cluster.config import ClusterConfig

    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", (Path(__file__).resolve().parents[2]
                                                             / "docs" / "config.md").read_text(), re.M))

    def leaves(node, path=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{path}{key}.")
            else:
                yield f"{path}{key}", value

    def shown(value) -> str:
        return {None: "null", True: "true", False: "false"}.get(value, str(value)) \
            if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)

    wrong = []
    for key, default in leaves(ClusterConfig().to_dict()):
        row = key.split(".")[-1] if key.startswith("pools.") else key
        if rows.get(row) != shown(default):
            wrong.append((key, default, rows.get(row)))
    assert not wrong, wrong


def test_the_model_section_is_the_engine_config_both_backends_run():
    """One engine config: the pools run the ``model:`` section with only the torch threads
    filled in, and the in-process backend takes the same object."""
    import dataclasses

    from cluster.pools import engine_config
    from engine.config import EngineConfig
    cfg = load_config(None, ["model.matmul_dtype=bfloat16"])
    assert isinstance(cfg.model, EngineConfig)
    assert engine_config(cfg).matmul_dtype == "bfloat16"
    assert engine_config(cfg, num_threads=2) == dataclasses.replace(cfg.model, num_threads=2)
    assert engine_config(load_config(None, [])).matmul_dtype is None
