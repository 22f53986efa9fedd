"""How KV moves from prefill to decode workers (the ``kv_transfer:`` config section)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tandem_common.config import ge, gt, name, setting


@dataclass(slots=True)
class KVTransferConfig:
    codec: str = setting("raw", name)                 # kv_transfer.codecs registry name
    entropy: Literal["zstd", "lz4"] | None = None   # lossless stage after the codec
    transport: str = setting("ray", name)             # kv_transfer.transports registry name
    deadline_s: float = setting(10.0, gt(0))
    max_bytes: int = setting(1 << 30, ge(1))
    # Raw KV bytes per section (whole layers, at least one): a section is one transport frame
    # (one object-store put and get), so small KVs go as one section and large ones stream.
    section_bytes: int = setting(4 << 20, ge(1))
