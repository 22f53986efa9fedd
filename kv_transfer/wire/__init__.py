"""The KV wire format: a versioned, self-describing, checksummed binary format for one
sequence's KV (and optionally its decoding state), streamable layer group by layer group.

No pickle anywhere: headers are fixed-width integers plus length-prefixed strings and a
JSON object of codec parameters; payloads are codec bytes. Decoding bad bytes raises
``KVFormatError`` / ``KVChecksumError`` / ``KVModelMismatch``, never returns wrong tensors.
Spec: kv_transfer/wire/frames.py and docs/kv_transfer.md.
"""
from kv_transfer.wire.blob import decode_kv, encode_kv, open_blob, split_frames
from kv_transfer.wire.frames import FORMAT_VERSION, KVHeader, Section, unpack_header
from kv_transfer.wire.sequence import decode_sequence, encode_sequence
from kv_transfer.wire.stream import KVStreamDecoder, KVStreamEncoder, torch_dtype

__all__ = ["encode_kv", "decode_kv", "encode_sequence", "decode_sequence", "open_blob",
           "split_frames", "KVStreamEncoder", "KVStreamDecoder", "KVHeader", "Section",
           "unpack_header", "FORMAT_VERSION", "torch_dtype"]
