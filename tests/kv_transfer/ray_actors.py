"""Ray actors standing in for a prefill worker (sender) and a decode worker (receiver) in
the ray transport tests. They use only the public kv_transfer API."""
from __future__ import annotations

import threading
import time

import ray
import torch

from engine.kv_export import KVLayout, SequenceKV
from engine.sampling_params import SamplingParams
from kv_transfer.transports import KVSectionSender, RayKVSource, get_transport, iter_kv_sections
from kv_transfer.wire import decode_sequence, encode_sequence
from tests.kv_transfer.samples import synthetic_kv

LAYOUT = KVLayout(num_layers=6, num_kv_heads=2, head_dim=16, dtype="float32", model_fingerprint="ray-test")


def kv_for(seed: int, tokens: int = 48) -> torch.Tensor:
    return synthetic_kv(LAYOUT.num_layers, tokens, LAYOUT.num_kv_heads, LAYOUT.head_dim, seed=seed)


@ray.remote(max_concurrency=4)
class Sender(RayKVSource):
    """Publishes KV; in streaming mode it can stop half-way until told to go on."""

    def __init__(self):
        self.streams = {}

    def publish_sequence(self, transfer_id: str, seed: int, codec: str = "raw", max_bytes=None):
        kv = kv_for(seed)
        seq = SequenceKV(transfer_id, list(range(kv.shape[2] + 1)), 10, kv, SamplingParams(seed=seed), b"rng")
        blob = encode_sequence(seq, LAYOUT, codec)
        return get_transport("ray").publish(transfer_id, blob, max_bytes=max_bytes), len(blob)

    def start_stream(self, transfer_id: str, seed: int, layers_now: int, deadline_s: float = 30.0):
        """Open a streamed transfer, send the first ``layers_now`` layers, return the descriptor."""
        kv = kv_for(seed)
        stream = get_transport("ray", streaming=True).open_send(transfer_id, time.time() + deadline_s)
        sender = KVSectionSender(stream, LAYOUT, kv.shape[2], "raw")
        sender.send_layers(0, kv[:layers_now])
        self.streams[transfer_id] = (sender, kv, layers_now)
        return stream.descriptor

    def finish_stream(self, transfer_id: str) -> int:
        sender, kv, done = self.streams.pop(transfer_id)
        sender.send_layers(done, kv[done:])
        return sender.close().bytes_moved

    def abort_stream(self, transfer_id: str, reason: str) -> None:
        sender, _, _ = self.streams.pop(transfer_id)
        sender.stream.abort(reason)


@ray.remote(max_concurrency=4)
class Receiver:
    """Imports KV section by section in a background thread and reports its progress."""

    def __init__(self):
        self.sections = []
        self.error = None
        self.thread = None
        self.readonly = []

    def fetch_sequence(self, descriptor, max_bytes=None):
        blob = get_transport("ray").fetch(descriptor, max_bytes=max_bytes)
        zero_copy = isinstance(blob, memoryview) and blob.readonly
        seq = decode_sequence(blob, LAYOUT)
        return seq.kv.numpy(), seq.token_ids, seq.rng_state, zero_copy

    def start_receive(self, descriptor, deadline_s: float = 30.0, max_bytes=None):
        transport = get_transport("ray")
        stream = transport.open_receive(descriptor, time.time() + deadline_s, max_bytes)

        def run():
            try:
                for start, group in iter_kv_sections(stream, LAYOUT):
                    self.sections.append((start, group))
            except Exception as exc:        # reported through result()
                self.error = exc
        self.thread = threading.Thread(target=run)
        self.thread.start()

    def progress(self) -> int:
        return len(self.sections)

    def result(self, timeout: float = 60.0):
        self.thread.join(timeout)
        if self.error is not None:
            return type(self.error).__name__, str(self.error)
        kv = torch.cat([g for _, g in sorted(self.sections, key=lambda s: s[0])])
        return "ok", kv.numpy()
