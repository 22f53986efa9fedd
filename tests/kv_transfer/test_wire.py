"""The wire format: round trips, streaming, and typed errors for every kind of bad blob."""
from __future__ import annotations

import pickle
import random
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.kv_export import KVLayout, SequenceKV
from engine.sampling_params import SamplingParams
from kv_transfer.errors import (KVChecksumError, KVFormatError, KVModelMismatch,
                                KVTransferError, UnknownCodecError)
from kv_transfer.wire import (KVStreamDecoder, KVStreamEncoder, decode_kv, decode_sequence,
                              encode_kv, encode_sequence, split_frames, unpack_header)
from kv_transfer.wire.frames import KVHeader, pack_section
from tests.kv_transfer.samples import synthetic_kv

CODECS = ["raw", "int8", "kivi4", "kivi2", "ecq"]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("layers_per_section", [1, 3, 8])
def test_raw_round_trip_is_bit_exact(dtype, layers_per_section):
    layout = KVLayout(5, 2, 16, dtype, "fp")
    kv = synthetic_kv(5, 33, 2, 16, getattr(torch, dtype))
    blob = encode_kv(kv, layout, "raw", layers_per_section=layers_per_section)
    out = decode_kv(blob, layout)
    assert out.dtype == kv.dtype and torch.equal(out.view(torch.uint8), kv.view(torch.uint8))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("entropy", [None, "zstd", "lz4"])
def test_every_codec_round_trips_shape_dtype_and_closeness(codec, entropy, small_layout):
    kv = synthetic_kv()
    out = decode_kv(encode_kv(kv, small_layout, codec, entropy=entropy), small_layout)
    assert out.shape == kv.shape and out.dtype == kv.dtype
    rel = float((out - kv).norm() / kv.norm())
    assert rel < {"raw": 1e-9, "int8": 0.02, "kivi4": 0.15, "kivi2": 0.6, "ecq": 0.3}[codec]


@pytest.mark.parametrize("tokens", [0, 1, 2, 7])
@pytest.mark.parametrize("codec", CODECS)
def test_tiny_and_empty_sequences_round_trip(tokens, codec, small_layout):
    kv = synthetic_kv(tokens=tokens)
    out = decode_kv(encode_kv(kv, small_layout, codec, entropy="zstd"), small_layout)
    assert out.shape == kv.shape
    if codec == "raw":
        assert torch.equal(out, kv)


def test_entropy_stage_shrinks_compressible_kv_and_stores_incompressible_as_is(small_layout):
    zeros = torch.zeros(4, 2, 64, 2, 16)
    assert len(encode_kv(zeros, small_layout, entropy="zstd")) < len(encode_kv(zeros, small_layout)) / 20
    noise = synthetic_kv()
    plain, packed = encode_kv(noise, small_layout), encode_kv(noise, small_layout, entropy="lz4")
    assert len(packed) <= len(plain) + 64      # never inflated beyond a few header bytes
    assert torch.equal(decode_kv(packed, small_layout), noise)


def test_sequence_round_trip_carries_tokens_sampling_rng_and_extra(small_layout):
    kv = synthetic_kv(tokens=20)
    seq = SequenceKV("req-7", list(range(100, 121)), 12, kv,
                     SamplingParams(temperature=0.7, top_k=5, seed=11, stop=["."], max_tokens=9,
                                    presence_penalty=0.5, frequency_penalty=-0.25, repetition_penalty=1.2,
                                    min_tokens=3, logit_bias={7: -100.0, 42: 2.5}),
                     rng_state=bytes(range(256)) * 3, output_text_offset=4,
                     extra={"cache_salt": b"\x00tenant", "num_cached_tokens": 16})
    back = decode_sequence(encode_sequence(seq, small_layout, "int8", entropy="zstd"), small_layout)
    assert (back.request_id, back.token_ids, back.prompt_len) == ("req-7", seq.token_ids, 12)
    assert back.sampling == seq.sampling and back.rng_state == seq.rng_state
    assert back.sampling.logit_bias == {7: -100.0, 42: 2.5}       # token ids, not JSON strings
    assert back.output_text_offset == 4 and back.extra == seq.extra
    assert back.kv.shape == kv.shape
    # a sequence blob is also a KV blob
    assert decode_kv(encode_sequence(seq, small_layout), small_layout).equal(kv)


def test_sequence_without_rng_state_round_trips(small_layout):
    seq = SequenceKV("r", [1, 2, 3], 3, synthetic_kv(tokens=2), SamplingParams(temperature=0))
    back = decode_sequence(encode_sequence(seq, small_layout), small_layout)
    assert back.rng_state is None and back.token_ids == [1, 2, 3]


def test_decode_sequence_refuses_a_plain_kv_blob(small_layout):
    with pytest.raises(KVFormatError, match="no sequence metadata"):
        decode_sequence(encode_kv(synthetic_kv(), small_layout), small_layout)


def test_every_truncation_raises_a_typed_error(small_layout):
    blob = encode_kv(synthetic_kv(tokens=9), small_layout, "kivi4", entropy="zstd")
    for cut in list(range(0, 200)) + list(range(200, len(blob), 7)):
        with pytest.raises(KVFormatError):
            decode_kv(blob[:cut], small_layout)


@pytest.mark.parametrize("codec,entropy", [("raw", None), ("ecq", None), ("kivi2", "lz4")])
def test_any_single_bit_flip_raises_never_returns(codec, entropy, small_layout):
    seq = SequenceKV("r", list(range(17)), 5, synthetic_kv(tokens=16), SamplingParams(), b"rng")
    blob = encode_sequence(seq, small_layout, codec, entropy=entropy)
    rng = random.Random(0)
    for pos in rng.sample(range(len(blob)), 300):
        bad = bytearray(blob)
        bad[pos] ^= 1 << rng.randrange(8)
        with pytest.raises((KVFormatError, KVModelMismatch)):
            decode_sequence(bytes(bad), small_layout)


def test_wrong_version_is_a_format_error_even_with_a_valid_checksum(small_layout):
    blob = bytearray(encode_kv(synthetic_kv(), small_layout))
    header_len = unpack_header(blob)[1]
    blob[4:6] = struct.pack("<H", 2)
    blob[header_len - 4:header_len] = struct.pack("<I", zlib.crc32(blob[:header_len - 4]))
    with pytest.raises(KVFormatError, match="version 2"):
        decode_kv(bytes(blob), small_layout)


def test_other_model_or_shape_or_dtype_is_a_model_mismatch(small_layout):
    blob = encode_kv(synthetic_kv(), small_layout)
    for other in (replace(small_layout, model_fingerprint="other-model"),
                  replace(small_layout, num_kv_heads=4, head_dim=8),
                  replace(small_layout, num_layers=5),
                  replace(small_layout, dtype="bfloat16")):
        with pytest.raises(KVModelMismatch):
            decode_kv(blob, other)


def test_sections_spliced_from_another_blob_fail_their_checksum(small_layout):
    a = split_frames(encode_kv(synthetic_kv(seed=1), small_layout))
    b = split_frames(encode_kv(synthetic_kv(seed=2), small_layout))
    spliced = b"".join([bytes(a[0]), bytes(a[1]), bytes(b[2]), *map(bytes, a[3:])])
    with pytest.raises(KVChecksumError):
        decode_kv(spliced, small_layout)


def test_trailing_garbage_is_rejected(small_layout):
    with pytest.raises(KVFormatError, match="trailing"):
        decode_kv(encode_kv(synthetic_kv(), small_layout) + b"\x00", small_layout)


def test_a_pickle_is_never_unpickled(small_layout):
    class Boom:
        def __reduce__(self):
            return (exec, ("import builtins; builtins.KVT_PWNED = True",))
    payload = pickle.dumps(Boom())
    for blob in (payload, b"TKVH" + payload):
        with pytest.raises(KVFormatError):
            decode_kv(blob, small_layout)
    import builtins
    assert not hasattr(builtins, "KVT_PWNED")


def test_kv_transfer_sources_never_use_pickle():
    root = Path(__file__).resolve().parents[2] / "kv_transfer"
    mine = [p for sub in ("wire", "codecs", "transports") for p in (root / sub).rglob("*.py")]
    mine += [root / "__init__.py", root / "errors.py"]
    for path in mine:
        text = path.read_text()
        assert "import pickle" not in text and "cloudpickle" not in text and "pickle.loads" not in text, path


def test_unknown_codec_in_a_header_is_a_typed_error(small_layout):
    header = _header(small_layout, codec="brotli-9000", params={})
    with pytest.raises(UnknownCodecError):
        KVStreamDecoder(small_layout, header.pack())


def test_bad_codec_parameters_in_a_header_are_a_format_error(small_layout):
    with pytest.raises(KVFormatError, match="bad parameters"):
        KVStreamDecoder(small_layout, _header(small_layout, codec="kivi4", params={"bits": 3}).pack())


def test_a_section_claiming_more_bytes_than_its_codec_makes_is_refused(small_layout):
    header = _header(small_layout, codec="int8", params={}, entropy="zstd")
    import zstandard
    bomb = zstandard.ZstdCompressor().compress(bytes(50_000_000))
    frame = b"".join(bytes(memoryview(b)) for b in pack_section(header.stream_id, 0, 0, 1, 50_000_000, [bomb]))
    decoder = KVStreamDecoder(small_layout, header.pack())
    with pytest.raises(KVFormatError, match="more than codec"):
        decoder.decode_section(frame)


def test_streaming_decodes_sections_in_any_order_and_detects_gaps(small_layout):
    kv = synthetic_kv()
    encoder = KVStreamEncoder(small_layout, kv.shape[2], "int8", layers_per_section=1)
    frames = [b"".join(bytes(memoryview(b)) for b in encoder.encode_section(i, kv[i:i + 1])) for i in range(4)]
    decoder = KVStreamDecoder(small_layout, encoder.header_bytes())
    got = {}
    for i in (2, 0, 3):
        start, group = decoder.decode_section(frames[i])
        got[start] = group
    with pytest.raises(KVFormatError, match="missing"):
        decoder.finish()
    with pytest.raises(KVFormatError, match="repeated"):
        decoder.decode_section(frames[0])
    got.update([decoder.decode_section(frames[1])])
    decoder.finish()
    out = torch.cat([got[i] for i in range(4)])
    assert float((out - kv).norm() / kv.norm()) < 0.02


def test_a_streamed_header_plus_frames_is_a_valid_blob(small_layout):
    kv = synthetic_kv()
    encoder = KVStreamEncoder(small_layout, kv.shape[2], "raw", layers_per_section=3)
    parts = [encoder.header_bytes()]
    for i in range(encoder.num_sections):
        start, count = encoder.header.layer_range(i)
        parts += [bytes(memoryview(b)) for b in encoder.encode_section(i, kv[start:start + count])]
    assert torch.equal(decode_kv(b"".join(parts), small_layout), kv)


def test_encode_validates_its_input(small_layout):
    with pytest.raises(ValueError, match="dtype"):
        encode_kv(synthetic_kv(dtype=torch.float16), small_layout)
    with pytest.raises(ValueError, match="does not match layout"):
        encode_kv(synthetic_kv(heads=3), small_layout)
    with pytest.raises(UnknownCodecError):
        encode_kv(synthetic_kv(), small_layout, "nope")
    with pytest.raises(ValueError):
        encode_kv(synthetic_kv(), small_layout, "kivi4", codec_params={"group": 0})
    with pytest.raises(UnknownCodecError):
        encode_kv(synthetic_kv(), small_layout, entropy="brotli")


def test_errors_form_one_hierarchy():
    for exc in (KVFormatError, KVChecksumError, KVModelMismatch, UnknownCodecError):
        assert issubclass(exc, KVTransferError)
    assert issubclass(KVChecksumError, KVFormatError) and issubclass(UnknownCodecError, ValueError)


def _header(layout: KVLayout, codec: str, params: dict, entropy: str | None = None) -> KVHeader:
    return KVHeader(layout.dtype, layout.num_layers, layout.num_kv_heads, layout.head_dim, 64, 1,
                    12345, layout.model_fingerprint, codec, params, entropy)
