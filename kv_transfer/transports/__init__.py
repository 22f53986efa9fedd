"""KV transports: a small ABC and a registry by name.

``local`` (in-process) and ``ray`` (Ray's object store, optionally streamed layer by layer
from a sender actor). ``kv_stream`` sends and receives KV section by section over any of
them. GPU seam: ``get_transport("ray", tensor_transport="nixl")`` (docs/kv_transfer.md).
The names load on first use; listing transport names imports none of them.
"""
from tandem_common.lazy import lazy_exports

_EXPORTS = {name: "kv_transfer.transports.base" for name in (
    "KVTransport", "ReceiveStream", "SendStream", "TransferStats", "available_transports",
    "get_transport", "register_transport")} | {name: "kv_transfer.transports.kv_stream" for name in (
    "KVSectionReceiver", "KVSectionSender", "iter_kv_sections", "receive_kv", "receive_sequence",
    "send_kv")} | {
    "LocalDescriptor": "kv_transfer.transports.local", "LocalTransport": "kv_transfer.transports.local",
    "AsyncRayKVSource": "kv_transfer.transports.ray_source", "RayKVSource": "kv_transfer.transports.ray_source",
    "RayKVDescriptor": "kv_transfer.transports.ray_transport", "RayTransport": "kv_transfer.transports.ray_transport"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
