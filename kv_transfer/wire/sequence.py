"""A whole ``SequenceKV`` on the wire: the KV sections plus a metadata section carrying the
token ids, prompt length, sampling parameters (JSON) and the sampler's RNG state (raw
bytes). JSON and fixed-width integers only: nothing in a blob can run code.

Metadata payload::

    u32 N | N bytes UTF-8 JSON {request_id, prompt_len, sampling, output_text_offset, extra}
    | u32 M | M x i32 token ids | u8 has_rng | u32 R | R bytes rng state

``bytes`` values inside ``extra`` (the engine puts its cache salt there) travel as
``{"$b64": "<base64>"}`` and come back as bytes.
"""
from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any

import numpy as np
import torch

from engine.kv_export import SequenceKV
from engine.sampling_params import SamplingParams
from kv_transfer.errors import KVFormatError
from kv_transfer.wire.blob import _section_frames, assemble, decode_sections, open_blob
from kv_transfer.wire.stream import KVStreamEncoder

_U32 = struct.Struct("<I")
_MAX_TOKEN = (1 << 31) - 1
_B64 = "$b64"


def encode_sequence(seq: SequenceKV, layout: Any, codec: str = "raw", codec_params: dict | None = None,
                    entropy: str | None = None, layers_per_section: int = 1) -> bytes:
    """Encode a ``SequenceKV`` (its KV through ``codec``, its state losslessly) into one blob."""
    seq.validate(layout)
    encoder = KVStreamEncoder(layout, seq.num_computed, codec, codec_params, entropy,
                              layers_per_section, has_sequence=True)
    frames = [encoder.meta_section(pack_meta(seq))] + _section_frames(encoder, seq.kv)
    return assemble(encoder, frames)


def decode_sequence(blob: bytes | memoryview, layout: Any, device: torch.device | str = "cpu") -> SequenceKV:
    """The ``SequenceKV`` of a blob made by ``encode_sequence``, verified against ``layout``."""
    decoder, sections = open_blob(blob, layout, device)
    if not decoder.header.has_sequence:
        raise KVFormatError("this KV blob carries no sequence metadata (made by encode_kv?)")
    kv = decode_sections(decoder, sections)
    return unpack_meta(decoder.meta, kv, layout)


def pack_meta(seq: SequenceKV) -> bytes:
    """The metadata payload of ``seq`` (everything but its KV)."""
    doc = {"request_id": seq.request_id, "prompt_len": seq.prompt_len,
           "sampling": seq.sampling.to_dict(), "output_text_offset": seq.output_text_offset,
           "extra": seq.extra}
    try:
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False, default=_bytes_to_json).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sequence metadata must be JSON-serialisable (extra={seq.extra!r}): {exc}") from None
    tokens = np.asarray(seq.token_ids, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() > _MAX_TOKEN):
        raise ValueError("token ids must be in [0, 2**31)")
    rng = seq.rng_state
    if rng is not None and not isinstance(rng, (bytes, bytearray)):
        raise ValueError(f"rng_state must be bytes or None, got {type(rng).__name__}")
    return b"".join([_U32.pack(len(text)), text, _U32.pack(tokens.size), tokens.astype("<i4").tobytes(),
                     bytes([rng is not None]), _U32.pack(len(rng or b"")), bytes(rng or b"")])


def _bytes_to_json(value: Any) -> dict:
    """bytes values (e.g. a cache salt in ``extra``) travel as {"$b64": "..."}."""
    if isinstance(value, (bytes, bytearray)):
        return {_B64: base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _json_to_bytes(obj: dict) -> Any:
    if len(obj) == 1 and _B64 in obj:
        if not isinstance(obj[_B64], str):
            raise ValueError("a $b64 value must be a string")
        return base64.b64decode(obj[_B64], validate=True)
    return obj


def unpack_meta(payload: bytes, kv: torch.Tensor, layout: Any) -> SequenceKV:
    """Rebuild the ``SequenceKV`` from its metadata payload and decoded KV; KVFormatError if invalid."""
    try:
        pos = 0
        (n,) = _U32.unpack_from(payload, pos)
        doc = json.loads(payload[pos + 4:pos + 4 + n].decode("utf-8"), object_hook=_json_to_bytes)
        pos += 4 + n
        (m,) = _U32.unpack_from(payload, pos)
        pos += 4
        if pos + 4 * m > len(payload):
            raise ValueError("token ids run past the metadata")
        tokens = np.frombuffer(payload, dtype="<i4", count=m, offset=pos).tolist()
        pos += 4 * m
        has_rng = payload[pos]
        (r,) = _U32.unpack_from(payload, pos + 1)
        pos += 5
        rng = bytes(payload[pos:pos + r]) if has_rng else None
        if has_rng not in (0, 1) or pos + r != len(payload) or (not has_rng and r):
            raise ValueError("malformed rng state or trailing bytes")
        if not isinstance(doc, dict) or set(doc) != {"request_id", "prompt_len", "sampling",
                                                      "output_text_offset", "extra"}:
            raise ValueError("metadata JSON has the wrong fields")
        if not isinstance(doc["sampling"], dict) or not isinstance(doc["extra"], dict):
            raise ValueError("sampling and extra must be objects")
        if not isinstance(doc["request_id"], str) or any(
                not isinstance(doc[k], int) or isinstance(doc[k], bool) for k in ("prompt_len", "output_text_offset")):
            raise ValueError("request_id must be a string, prompt_len and output_text_offset ints")
        seq = SequenceKV(request_id=doc["request_id"], token_ids=tokens, prompt_len=doc["prompt_len"],
                         kv=kv, sampling=SamplingParams.from_dict(doc["sampling"]), rng_state=rng,
                         output_text_offset=doc["output_text_offset"], extra=doc["extra"])
        seq.validate(layout)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError, TypeError, RecursionError,
            binascii.Error) as exc:
        raise KVFormatError(f"KV sequence metadata is invalid: {exc}") from None
    return seq
