"""The in-process transport, and the section-by-section send/receive glue over it."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from engine.kv_export import SequenceKV
from engine.sampling_params import SamplingParams
from kv_transfer.errors import (KVFormatError, KVModelMismatch, KVTransferFailed, KVTransferNotFound,
                                KVTransferTimeout, KVTransferTooLarge, UnknownTransportError)
from kv_transfer.transports import (KVSectionSender, available_transports, get_transport,
                                    iter_kv_sections, receive_kv, receive_sequence, send_kv)
from kv_transfer.transports.base import SendStream, TransferStats
from kv_transfer.transports.kv_stream import KVSectionReceiver
from kv_transfer.transports.local import pending_transfers
from kv_transfer.wire import encode_kv
from tests.kv_transfer.samples import synthetic_kv


@pytest.fixture
def local():
    transport = get_transport("local")
    yield transport
    assert pending_transfers() == 0, "a test leaked an open local transfer"


def test_registry_knows_local_and_ray():
    assert {"local", "ray"} <= set(available_transports())
    with pytest.raises(UnknownTransportError):
        get_transport("carrier-pigeon")


def test_publish_then_fetch_returns_the_same_bytes_zero_copy(local, small_layout):
    blob = encode_kv(synthetic_kv(), small_layout, "int8")
    descriptor = local.publish("t-pub", blob)
    got = local.fetch(descriptor)
    assert bytes(got) == blob and got.obj is blob       # the sender's buffer, not a copy


def test_streamed_kv_arrives_section_by_section_while_the_sender_is_still_sending(local, small_layout):
    kv = synthetic_kv()
    stream = local.open_send("t-stream")
    sender = KVSectionSender(stream, small_layout, kv.shape[2], "raw")
    sender.send_layers(0, kv[:2])
    sections = iter_kv_sections(local.open_receive(stream.descriptor), small_layout)
    first = [next(sections), next(sections)]           # both exist before layers 2-3 do
    assert [start for start, _ in first] == [0, 1]
    sender.send_layers(2, kv[2:])
    sender.close()
    rest = list(sections)
    got = torch.cat([g for _, g in first + rest])
    assert torch.equal(got, kv)


def test_stats_report_the_bytes_moved_on_both_sides(local, small_layout):
    kv = synthetic_kv()
    stream = local.open_send("t-stats")
    sent = send_kv(stream, kv, small_layout, "kivi4", entropy="zstd")
    receiving = local.open_receive(stream.descriptor)
    receive_kv(receiving, small_layout)
    assert sent.bytes_moved == receiving.stats.bytes_moved > 0
    assert sent.frames == receiving.stats.frames == 1 + small_layout.num_layers


def test_a_sequence_travels_with_its_metadata_sent_last(local, small_layout):
    kv = synthetic_kv(tokens=9)
    seq = SequenceKV("req", list(range(10)), 4, kv, SamplingParams(temperature=0.3, seed=5), b"\x07" * 16)
    stream = local.open_send("t-seq")
    send_kv(stream, kv, small_layout, "raw", seq=seq)
    back = receive_sequence(local.open_receive(stream.descriptor), small_layout)
    assert back.token_ids == seq.token_ids and back.rng_state == seq.rng_state and torch.equal(back.kv, kv)


def test_a_receiver_times_out_when_nothing_arrives(local):
    stream = local.open_send("t-timeout")
    t0 = time.monotonic()
    with pytest.raises(KVTransferTimeout):
        list(local.open_receive(stream.descriptor, deadline=time.time() + 0.2))
    assert time.monotonic() - t0 < 5
    stream.close()


def test_a_sender_past_its_deadline_cannot_send(local):
    stream = local.open_send("t-late", deadline=time.time() - 1)
    with pytest.raises(KVTransferTimeout):
        stream.send(b"frame")
    stream.close()
    _drain(local, stream)


def test_size_limits_hold_on_both_sides(local, small_layout):
    blob = encode_kv(synthetic_kv(), small_layout)
    with pytest.raises(KVTransferTooLarge):
        local.publish("t-big-send", blob, max_bytes=len(blob) - 1)
    _drain(local, None, "t-big-send")
    descriptor = local.publish("t-big-recv", blob)
    with pytest.raises(KVTransferTooLarge):
        local.fetch(descriptor, max_bytes=100)


def test_an_aborted_sender_fails_the_receiver(local, small_layout):
    stream = local.open_send("t-abort")
    stream.send(b"header")
    stream.abort("prefill worker crashed")
    with pytest.raises(KVTransferFailed, match="crashed"):
        list(local.open_receive(stream.descriptor))


def test_a_failing_sender_context_aborts(local):
    with pytest.raises(RuntimeError):
        with local.open_send("t-ctx") as stream:
            raise RuntimeError("encode failed")
    with pytest.raises(KVTransferFailed, match="encode failed"):
        list(local.open_receive(stream.descriptor))


def test_a_transfer_is_received_once_and_unknown_ids_are_typed(local):
    descriptor = local.publish("t-once", b"x")
    assert bytes(local.fetch(descriptor)) == b"x"
    with pytest.raises(KVTransferNotFound):
        local.fetch(descriptor)
    first = local.open_send("t-dup")
    with pytest.raises(ValueError, match="already open"):
        local.open_send("t-dup")
    first.close()
    _drain(local, first)


def test_kv_for_another_model_is_refused_at_the_header(local, small_layout):
    from dataclasses import replace
    stream = local.open_send("t-model")
    send_kv(stream, synthetic_kv(), small_layout)
    with pytest.raises(KVModelMismatch):
        receive_kv(local.open_receive(stream.descriptor), replace(small_layout, model_fingerprint="other"))


def test_a_forged_token_count_is_refused_before_the_receiver_allocates_for_it(local, small_layout):
    import dataclasses
    from kv_transfer.wire.stream import KVStreamEncoder
    kv = synthetic_kv()
    honest = KVStreamEncoder(small_layout, kv.shape[2], "raw")
    forged = KVStreamEncoder(small_layout, 1 << 31, "raw")      # claims 2**31 tokens (TBs of KV)
    forged.header = dataclasses.replace(forged.header, stream_id=honest.header.stream_id)
    stream = local.open_send("t-forged")
    stream.send(forged.header_bytes())
    stream.send(honest.encode_section(0, kv[:1]))               # a section of the real size
    stream.close()
    receiver = KVSectionReceiver(local.open_receive(stream.descriptor), small_layout, whole=True)
    with pytest.raises(KVFormatError):
        list(receiver)
    assert receiver.kv is None


def test_a_corrupted_section_in_flight_is_a_format_error(local, small_layout):
    kv = synthetic_kv()
    stream = local.open_send("t-corrupt")
    sender = KVSectionSender(stream, small_layout, kv.shape[2], "int8")
    frame = bytearray(b"".join(bytes(memoryview(b)) for b in sender.encoder.encode_section(0, kv[:1])))
    frame[100] ^= 0x10
    stream.send(bytes(frame))
    stream.close()
    with pytest.raises(KVFormatError):
        receive_kv(local.open_receive(stream.descriptor), small_layout)


def test_closing_before_every_section_is_an_error_for_both_sides(local, small_layout):
    kv = synthetic_kv()
    stream = local.open_send("t-short")
    sender = KVSectionSender(stream, small_layout, kv.shape[2])
    sender.send_layers(0, kv[:3])
    with pytest.raises(ValueError, match="3 of 4"):
        sender.close()
    with pytest.raises(KVTransferFailed):
        receive_kv(local.open_receive(stream.descriptor), small_layout)


def test_concurrent_transfers_do_not_mix(local, small_layout):
    kvs = {f"t-par-{i}": synthetic_kv(seed=i) for i in range(6)}
    results, errors = {}, []

    def run(tid):
        try:
            stream = local.open_send(tid)
            threading.Thread(target=send_kv, args=(stream, kvs[tid], small_layout, "raw")).start()
            results[tid] = receive_kv(local.open_receive(stream.descriptor), small_layout)
        except Exception as exc:      # surfaced by the assertion below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(tid,)) for tid in kvs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and all(torch.equal(results[t], kvs[t]) for t in kvs)


def _drain(local, stream, transfer_id: str | None = None) -> None:
    """Consume a transfer a test left open so the leak check stays meaningful."""
    from kv_transfer.transports.local import LocalDescriptor
    descriptor = stream.descriptor if stream is not None else LocalDescriptor(transfer_id, time.time() + 5)
    try:
        for _ in local.open_receive(descriptor, deadline=time.time() + 0.05):
            pass
    except (KVTransferTimeout, KVTransferNotFound, KVTransferFailed):
        pass


def test_every_listed_transport_name_builds_its_transport():
    """The registry lists built-ins without importing them; each listed name must load."""
    from kv_transfer.transports import KVTransport

    for name in available_transports():
        transport = get_transport(name)
        assert isinstance(transport, KVTransport) and transport.name == name


class _Recording(SendStream):
    """A send stream that keeps the frames it is handed, as they are (no transport)."""

    def __init__(self) -> None:
        self.frames: list = []

    @property
    def descriptor(self):
        return None

    def send(self, frame) -> None:
        self.frames.append(frame)

    def close(self) -> TransferStats:
        return TransferStats("recording")

    def abort(self, reason: str) -> None:
        pass


def test_a_section_handed_in_whole_is_encoded_from_the_kv_itself_not_a_copy(small_layout):
    import numpy as np
    kv = synthetic_kv()                      # [L, 2, T, H, D], contiguous
    stream = _Recording()
    sender = KVSectionSender(stream, small_layout, kv.shape[2], "raw", layers_per_section=2)
    sender.send_layers(0, kv)
    payloads = [frame[1] for frame in stream.frames[1:]]   # after the header: [frame header, payload]
    per_layer = kv[0].numel() * kv.element_size()
    assert [p.__array_interface__["data"][0] for p in payloads] == \
        [kv.data_ptr() + i * 2 * per_layer for i in range(len(payloads))]
    assert all(isinstance(p, np.ndarray) and p.nbytes == 2 * per_layer for p in payloads)
    # Layers handed in one at a time are stacked into their section: the same bytes either way.
    stream2 = _Recording()
    sender2 = KVSectionSender(stream2, small_layout, kv.shape[2], "raw", layers_per_section=2)
    for layer in range(kv.shape[0]):
        sender2.send_layers(layer, kv[layer:layer + 1])
    assert [bytes(f[1]) for f in stream2.frames[1:]] == [bytes(p) for p in payloads]


def test_received_sections_land_in_one_kv_tensor_and_after_the_first_decode_in_place(local, small_layout):
    kv = synthetic_kv()
    stream = local.open_send("t-inplace")
    send_kv(stream, kv, small_layout, "int8")
    receiver = KVSectionReceiver(local.open_receive(stream.descriptor), small_layout, whole=True)
    seen = []
    for start, group in receiver:      # where each section was when it was yielded
        seen.append((start, group.data_ptr(), receiver.kv.data_ptr()))
    whole = receiver.kv
    per_layer = whole[0].numel() * whole.element_size()
    assert len(seen) == small_layout.num_layers >= 2
    assert all(ptr == base + start * per_layer and base == whole.data_ptr() for start, ptr, base in seen)
    stream = local.open_send("t-inplace-2")
    send_kv(stream, kv, small_layout, "int8")
    assert torch.equal(receive_kv(local.open_receive(stream.descriptor), small_layout), whole)
