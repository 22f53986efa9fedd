"""KV transports: a small ABC and a registry by name.

``local`` (in-process) and ``ray`` (Ray's object store, optionally streamed layer by layer
from a sender actor). ``kv_stream`` sends and receives KV section by section over any of
them. GPU seam: ``get_transport("ray", tensor_transport="nixl")`` (docs/kv_transfer.md).
"""
from kv_transfer.transports.base import (KVTransport, ReceiveStream, SendStream, TransferStats,
                                         available_transports, get_transport, register_transport)
from kv_transfer.transports.kv_stream import (KVSectionReceiver, KVSectionSender, iter_kv_sections,
                                              receive_kv, receive_sequence, send_kv)
from kv_transfer.transports.local import LocalDescriptor, LocalTransport
from kv_transfer.transports.ray_source import AsyncRayKVSource, RayKVSource
from kv_transfer.transports.ray_transport import RayKVDescriptor, RayTransport

__all__ = ["KVTransport", "SendStream", "ReceiveStream", "TransferStats", "get_transport",
           "available_transports", "register_transport", "LocalTransport", "LocalDescriptor",
           "RayTransport", "RayKVDescriptor", "RayKVSource", "AsyncRayKVSource",
           "KVSectionSender", "KVSectionReceiver", "send_kv", "receive_kv", "receive_sequence",
           "iter_kv_sections"]
