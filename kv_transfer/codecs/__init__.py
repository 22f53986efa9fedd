"""KV codecs: a registry by name. Each codec declares whether it is lossless.

Built in: ``raw`` (lossless), ``int8``, ``kivi4``, ``kivi2``, ``ecq``, ``ecq-hq`` and
``ecq-lo`` (lossy); entropy stages ``zstd`` and ``lz4`` (lossless, on top of any codec).
See docs/kv_transfer.md for measured ratio, quality and speed. The names load on first use:
listing and checking codec names (``available_codecs``) does not import torch.
"""
from tandem_common.lazy import lazy_exports

_EXPORTS = {name: "kv_transfer.codecs.registry" for name in (
    "available_codecs", "get_codec", "is_lossless", "register_codec")} | {
    "GroupShape": "kv_transfer.codecs.base", "KVCodec": "kv_transfer.codecs.base"} | {
    name: "kv_transfer.codecs.entropy" for name in (
        "EntropyStage", "available_entropy_stages", "get_entropy_stage")}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
