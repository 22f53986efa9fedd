"""Building blocks shared by the quantizing codecs: byte views, a bounds-checked payload
reader, fp16 side information, and sub-byte bit packing. All vectorised torch code."""
from __future__ import annotations

import numpy as np
import torch

from kv_transfer.errors import KVFormatError

FP16_MAX = 65504.0


def as_bytes(t: torch.Tensor) -> np.ndarray:
    """A flat uint8 numpy view of ``t``'s memory (moved to CPU and made contiguous first)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.dtype != torch.uint8:
        t = t.view(torch.uint8) if t.dim() > 0 else t.reshape(1).view(torch.uint8)
    return t.reshape(-1).numpy()


class PayloadReader:
    """Reads typed tensors off a payload front to back; KVFormatError on any overrun or leftover."""

    __slots__ = ("_view", "_pos", "_codec")

    def __init__(self, payload: memoryview | bytes, codec: str):
        self._view = memoryview(payload).cast("B")
        self._pos = 0
        self._codec = codec

    def take(self, nbytes: int) -> memoryview:
        end = self._pos + nbytes
        if nbytes < 0 or end > len(self._view):
            raise KVFormatError(f"{self._codec} payload is truncated: needs {end} bytes, has {len(self._view)}")
        chunk = self._view[self._pos:end]
        self._pos = end
        return chunk

    def tensor(self, dtype: torch.dtype, shape: tuple[int, ...],
               device: torch.device | str = "cpu") -> torch.Tensor:
        """The next ``prod(shape)`` elements as a fresh (writable) tensor on ``device``."""
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        itemsize = torch.empty((), dtype=dtype).element_size()
        raw = np.frombuffer(self.take(count * itemsize), dtype=np.uint8).copy()
        out = torch.from_numpy(raw).view(dtype).reshape(shape)
        return out if torch.device(device).type == "cpu" else out.to(device)

    def rest(self) -> memoryview:
        return self.take(len(self._view) - self._pos)

    def done(self) -> None:
        if self._pos != len(self._view):
            raise KVFormatError(f"{self._codec} payload has {len(self._view) - self._pos} unexpected trailing bytes")


def side_info_fp16(x: torch.Tensor, what: str, codec: str) -> torch.Tensor:
    """``x`` rounded to fp16 (scales, zero points, means travel as fp16); ValueError if it overflows."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{codec}: KV holds non-finite values ({what} is not finite)")
    if float(x.abs().max()) > FP16_MAX:
        raise ValueError(f"{codec}: {what} exceeds the fp16 range; use the raw codec for this KV")
    return x.to(torch.float16)


def inverse_scale(scale16: torch.Tensor) -> torch.Tensor:
    """1 / scale in float32, and 0 where the scale is 0 (constant group or underflow): every
    code of such a group is 0 and decodes to the zero point exactly."""
    s = scale16.float()
    return torch.where(s > 0, 1.0 / s, torch.zeros_like(s))


def _lane_mask(lane: int, width: int) -> int:
    """An int64 mask keeping the low ``width`` bits of every ``lane``-bit lane."""
    unit = (1 << width) - 1
    mask = 0
    for start in range(0, 64, lane):
        mask |= unit << start
    return mask - (1 << 64) if mask >= 1 << 63 else mask


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes (< 2**bits) into ``numel * bits / 8`` bytes, first code in the low bits.

    Works on int64 words of 8 codes at once (a shift-or cascade that halves the gaps
    between fields), so no per-byte strided ops; ``codes.numel()`` must be a multiple of 8.
    """
    flat = codes.reshape(-1)
    if bits == 8:
        return flat
    words = flat.view(torch.int64)
    lane, width = 8, bits
    while lane < 64:
        words = words | (words >> (lane - width))
        lane, width = lane * 2, width * 2
        words &= _lane_mask(lane, width)
    field = torch.int32 if bits == 4 else torch.int16
    fields = words.view(field).view(-1, 64 // (8 * bits))[:, 0]
    # a copy into fresh memory: .contiguous() keeps a 1-element view's stride, which .view() rejects
    return torch.empty(fields.shape, dtype=field, device=fields.device).copy_(fields).view(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: a flat uint8 tensor of ``packed.numel() * 8 // bits`` codes."""
    if bits == 8:
        return packed.reshape(-1)
    field = torch.int32 if bits == 4 else torch.int16
    words = packed.reshape(-1).view(field).to(torch.int64) & ((1 << (8 * bits)) - 1)
    lane, width = 64, 8 * bits
    while lane > 8:
        lane, width = lane // 2, width // 2
        words = words | (words << (lane - width))
        words &= _lane_mask(lane, width)
    return words.view(torch.uint8)


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take, padded to a whole 8-code word."""
    return (count + 7) // 8 * bits
