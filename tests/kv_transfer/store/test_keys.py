"""Key scheme: chained chunk hashes namespaced by model, dtype, codec and tenant."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tandem_common.hashing import chunk_hashes
from engine.kv_export import KVLayout
from kv_transfer.store.keys import KeyScheme

LAYOUT = KVLayout(2, 2, 4, "float32", "model-a")
TOKENS = list(range(100))


def scheme(layout=LAYOUT, codec="raw", chunk=16, share=False):
    return KeyScheme(layout, codec, chunk, share_tenants=share)


def test_only_full_chunks_get_keys_and_prefixes_share_them():
    keys = scheme().chunk_keys(TOKENS, "t")
    assert len(keys) == 6  # 100 tokens, 16 per chunk
    assert scheme().chunk_keys(TOKENS[:40], "t") == keys[:2]
    assert scheme().chunk_keys(TOKENS[:15], "t") == []


def test_keys_chain_so_a_changed_early_token_changes_every_later_key():
    changed = [7] + TOKENS[1:]
    a, b = scheme().chunk_keys(TOKENS, "t"), scheme().chunk_keys(changed, "t")
    assert all(x != y for x, y in zip(a, b))


def test_keys_use_engine_hashing_with_a_namespace_salt():
    s = scheme()
    assert s.chunk_hashes(TOKENS, "t") == chunk_hashes(TOKENS, 16, salt=s.namespace_salt("t"))


@pytest.mark.parametrize("other", [
    scheme(layout=KVLayout(2, 2, 4, "float32", "model-b")),
    scheme(layout=KVLayout(2, 2, 4, "bfloat16", "model-a")),
    scheme(codec="int8"),
], ids=["fingerprint", "dtype", "codec"])
def test_model_dtype_and_codec_isolate(other):
    assert set(scheme().chunk_keys(TOKENS, "t")).isdisjoint(other.chunk_keys(TOKENS, "t"))


def test_tenants_isolate_unless_the_deployment_shares():
    assert set(scheme().chunk_keys(TOKENS, "alice")).isdisjoint(scheme().chunk_keys(TOKENS, "bob"))
    assert scheme().chunk_keys(TOKENS, "alice") == scheme().chunk_keys(TOKENS, b"alice")
    shared = scheme(share=True)
    assert shared.chunk_keys(TOKENS, "alice") == shared.chunk_keys(TOKENS, "bob")


def test_keys_are_identical_in_another_process():
    code = ("from engine.kv_export import KVLayout; from kv_transfer.store.keys import KeyScheme; "
            "print(KeyScheme(KVLayout(2, 2, 4, 'float32', 'model-a'), 'raw', 16)"
            ".chunk_keys(list(range(100)), 't')[-1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=".")
    assert out.stdout.strip() == scheme().chunk_keys(TOKENS, "t")[-1]


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError):
        KeyScheme(LAYOUT, "raw", 0)
    with pytest.raises(ValueError):
        KeyScheme(KVLayout(2, 2, 4, "float32", ""), "raw", 16)
    with pytest.raises(ValueError):
        KeyScheme(KVLayout(2, 2, 4, "int3", "m"), "raw", 16)
    with pytest.raises(ValueError):
        scheme().chunk_keys(TOKENS, 42)


def test_the_key_prefix_separates_deployments_and_is_validated():
    from kv_transfer.store import StoreConfig
    a = KeyScheme(LAYOUT, "raw", 16, key_prefix="prod:eu")
    assert all(k.startswith("prod:eu.") for k in a.chunk_keys(TOKENS, "t"))
    assert set(a.chunk_keys(TOKENS, "t")).isdisjoint(scheme().chunk_keys(TOKENS, "t"))
    with pytest.raises(ValueError):
        StoreConfig(key_prefix="bad@prefix")
