"""Our LMCache "GPU connector": copies between the engine's KV and LMCache memory objects.

LMCache holds a chunk as a memory object in ``KV_2LTD`` layout ``[2, L, tokens, H*D]``.
The engine's KV is ``[L, 2, tokens, H, D]``, either dense (an exported sequence:
``kv=`` on store, ``kv_out=`` on retrieve) or paged (the engine's flat slot buffer
``kv_cache=[L, 2, slots, H, D]`` with ``slot_mapping=`` token -> slot). None of LMCache's
built-in connectors reads a plain CPU tensor, hence this one.
"""
from __future__ import annotations

import torch

from lmcache.v1.gpu_connector.gpu_connectors import GPUConnectorInterface
from lmcache.v1.memory_management import MemoryObj


class TandemKVConnector(GPUConnectorInterface):
    """Dense or paged ``[L, 2, *, H, D]`` engine KV <-> ``[2, L, n, H*D]`` memory objects."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int) -> None:
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim

    def get_shape(self, num_tokens: int) -> torch.Size:
        return torch.Size([self.num_layers, 2, num_tokens, self.num_kv_heads, self.head_dim])

    def _obj_view(self, memory_obj: MemoryObj, num_tokens: int) -> torch.Tensor:
        tensor = memory_obj.tensor
        if tensor is None:
            raise ValueError("memory object has no tensor")
        # [2, L, n, H*D] -> [2, L, n, H, D], then swap to the engine's [L, 2, n, H, D].
        return tensor.view(2, self.num_layers, num_tokens, self.num_kv_heads,
                           self.head_dim).transpose(0, 1)

    @staticmethod
    def _slots(kwargs: dict, start: int, end: int) -> torch.Tensor:
        slots = kwargs["slot_mapping"]
        if not isinstance(slots, torch.Tensor):
            slots = torch.as_tensor(slots, dtype=torch.long)
        return slots[start:end].to(torch.long)

    def from_gpu(self, memory_obj: MemoryObj, start: int, end: int, **kwargs) -> None:
        """Copy tokens ``[start, end)`` of the engine KV into ``memory_obj``."""
        dst = self._obj_view(memory_obj, end - start)
        if "kv" in kwargs:
            dst.copy_(kwargs["kv"][:, :, start:end])
        elif "kv_cache" in kwargs:
            dst.copy_(kwargs["kv_cache"].index_select(2, self._slots(kwargs, start, end)))
        else:
            raise ValueError("store needs kv= (dense) or kv_cache= + slot_mapping= (paged)")

    def to_gpu(self, memory_obj: MemoryObj, start: int, end: int, **kwargs) -> None:
        """Copy ``memory_obj`` into tokens ``[start, end)`` of the engine KV."""
        src = self._obj_view(memory_obj, end - start)
        if "kv_out" in kwargs:
            kwargs["kv_out"][:, :, start:end].copy_(src)
        elif "kv_cache" in kwargs:
            cache = kwargs["kv_cache"]
            cache.index_copy_(2, self._slots(kwargs, start, end), src.to(cache.dtype))
        else:
            raise ValueError("retrieve needs kv_out= (dense) or kv_cache= + slot_mapping= (paged)")

    def batched_from_gpu(self, memory_objs, starts, ends, **kwargs) -> None:
        for memory_obj, start, end in zip(memory_objs, starts, ends, strict=True):
            self.from_gpu(memory_obj, start, end, **kwargs)

    def batched_to_gpu(self, memory_objs, starts, ends, **kwargs) -> None:
        for memory_obj, start, end in zip(memory_objs, starts, ends, strict=True):
            self.to_gpu(memory_obj, start, end, **kwargs)
