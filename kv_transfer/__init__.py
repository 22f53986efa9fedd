"""Tandem's KV-transfer layer: wire format (``kv_transfer.wire``), codecs
(``kv_transfer.codecs``), transports (``kv_transfer.transports``) and the global prefix
store (``kv_transfer.store``).

Kept import-light on purpose (only the error types load here): the Redis fixture and the
router import subpackages without paying for torch.
"""
from kv_transfer.errors import (KVChecksumError, KVFormatError, KVModelMismatch,
                                KVTransferError, KVTransferFailed, KVTransferNotFound, KVTransferTimeout,
                                KVTransferTooLarge, UnknownCodecError, UnknownTransportError)

__all__ = ["KVTransferError", "KVFormatError", "KVChecksumError", "KVModelMismatch",
           "KVTransferTimeout", "KVTransferTooLarge", "KVTransferFailed", "KVTransferNotFound",
           "UnknownCodecError", "UnknownTransportError"]
