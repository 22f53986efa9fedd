"""Values at rest: wire blobs; anything corrupt or foreign is detected, never trusted."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from engine.kv_export import KVLayout
from kv_transfer.store.values import CorruptEntry, ValueCodec
from store_helpers import CHUNK, LAYOUT, synthetic_kv


class _Exploit:
    """Unpickling this would create a file: the test proves nothing unpickles."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def codec():
    return ValueCodec(LAYOUT, "raw")


def test_raw_round_trip_is_bit_exact(codec):
    kv = synthetic_kv(CHUNK)
    assert torch.equal(codec.decode(codec.encode(kv), CHUNK), kv)


@pytest.mark.parametrize("where", [0, 100, -1])
def test_a_flipped_byte_is_detected(codec, where):
    blob = bytearray(codec.encode(synthetic_kv(CHUNK)))
    blob[where] ^= 0x40
    with pytest.raises(CorruptEntry):
        codec.decode(bytes(blob), CHUNK)


@pytest.mark.parametrize("keep", [0, 7, 64, -1])
def test_a_truncated_value_is_detected(codec, keep):
    blob = codec.encode(synthetic_kv(CHUNK))
    with pytest.raises(CorruptEntry):
        codec.decode(blob[:keep], CHUNK)


def test_a_pickle_payload_is_rejected_and_never_unpickled(codec, tmp_path):
    target = tmp_path / "pwned"
    for payload in (pickle.dumps(_Exploit(str(target))), pickle.dumps(synthetic_kv(CHUNK)),
                    pickle.dumps({"kv": synthetic_kv(CHUNK).numpy()})):
        with pytest.raises(CorruptEntry):
            codec.decode(payload, CHUNK)
    assert not os.path.exists(target)


def test_another_models_value_is_rejected(codec):
    other = ValueCodec(KVLayout(2, 2, 8, "float32", "another-model"), "raw")
    with pytest.raises(CorruptEntry):
        codec.decode(other.encode(synthetic_kv(CHUNK)), CHUNK)


def test_a_value_of_the_wrong_length_is_rejected(codec):
    with pytest.raises(CorruptEntry):
        codec.decode(codec.encode(synthetic_kv(CHUNK // 2)), CHUNK)


def test_encoding_kv_of_the_wrong_shape_is_a_value_error(codec):
    with pytest.raises(ValueError):
        codec.encode(torch.zeros(3, 2, CHUNK, 2, 8))
