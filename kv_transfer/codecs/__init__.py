"""KV codecs: a registry by name. Each codec declares whether it is lossless.

Built in: ``raw`` (lossless), ``int8``, ``kivi4``, ``kivi2``, ``ecq``, ``ecq-hq`` and
``ecq-lo`` (lossy); entropy
stages ``zstd`` and ``lz4`` (lossless, on top of any codec). See docs/kv_transfer.md for
measured ratio, quality and speed.
"""
from kv_transfer.codecs.base import (GroupShape, KVCodec, available_codecs, get_codec,
                                     is_lossless, register_codec)
from kv_transfer.codecs.entropy import (EntropyStage, available_entropy_stages,
                                        get_entropy_stage)
from kv_transfer.codecs import raw as _raw, int8 as _int8, kivi as _kivi, ecq as _ecq  # noqa: F401,E501  (registration)

__all__ = ["GroupShape", "KVCodec", "available_codecs", "get_codec", "is_lossless",
           "register_codec", "EntropyStage", "available_entropy_stages", "get_entropy_stage"]
