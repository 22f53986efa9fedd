"""Typed errors of the KV-transfer layer.

Two families: the blob itself is bad (format, checksum, model mismatch: fatal for that
blob, retrying the same bytes cannot help; re-prefill or ask the sender again) and the move
went wrong (deadline, size: recoverable by retrying elsewhere or later). Callers catch
``KVTransferError`` to handle every one of them.
"""
from __future__ import annotations


class KVTransferError(Exception):
    """Base of every error raised by kv_transfer."""


class KVFormatError(KVTransferError):
    """The bytes are not a valid KV blob: truncated, bad magic, wrong version, bad fields."""


class KVChecksumError(KVFormatError):
    """A header or section checksum does not match its bytes: corrupted in flight or at rest."""


class KVModelMismatch(KVTransferError):
    """A valid blob made by a different model (fingerprint) or KV shape than the receiver's."""


class KVTransferTimeout(KVTransferError, TimeoutError):
    """A transfer did not complete before its deadline."""


class KVTransferTooLarge(KVTransferError):
    """A transfer exceeds the size limit of the sender or the receiver."""


class KVTransferFailed(KVTransferError):
    """The transport itself failed: the peer died, an object was lost, the sender aborted."""


class KVTransferNotFound(KVTransferError, KeyError):
    """No transfer with this id exists (never sent, already consumed, or expired)."""


class UnknownCodecError(KVTransferError, ValueError):
    """No codec or entropy stage is registered under this name."""


class UnknownTransportError(KVTransferError, ValueError):
    """No transport is registered under this name."""
