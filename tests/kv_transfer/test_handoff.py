"""The hand-off's sender sizes sections by bytes: each section is one transport frame (one
object-store put and get), so a small KV goes as one section and a large one streams in
groups of whole layers; what arrives is the same sequence either way."""
from __future__ import annotations

import pytest

from engine.kv_export import SequenceKV
from engine.sampling_params import SamplingParams
from kv_transfer.config import KVTransferConfig
from kv_transfer.handoff import KVSender
from kv_transfer.transports import get_transport, receive_sequence
from tests.kv_transfer.samples import synthetic_kv

LAYER_BYTES = 2 * 64 * 2 * 16 * 4        # one layer of synthetic_kv(): K and V, 64 tokens, fp32


def _seq() -> SequenceKV:
    kv = synthetic_kv()                    # [4, 2, 64, 2, 16]
    return SequenceKV("h-1", list(range(65)), 60, kv, SamplingParams(max_tokens=8), None)


@pytest.mark.parametrize("section_bytes, layers", [
    (4 << 20, 4),                   # the default: a small KV in one section
    (2 * LAYER_BYTES, 2),           # whole layers that fit
    (2 * LAYER_BYTES - 1, 1),
    (1, 1),                         # at least one layer
])
def test_sections_hold_as_many_whole_layers_as_fit_section_bytes(small_layout, section_bytes, layers):
    sender = KVSender(small_layout, KVTransferConfig(transport="local", section_bytes=section_bytes))
    assert sender.section_layers(_seq().kv) == layers


def test_an_explicit_layers_per_section_wins(small_layout):
    assert KVSender(small_layout, KVTransferConfig(transport="local"), layers_per_section=1) \
        .section_layers(_seq().kv) == 1


@pytest.mark.parametrize("section_bytes, frames", [(4 << 20, 3), (LAYER_BYTES, 6)])
def test_the_frames_sent_are_a_header_the_sections_and_the_metadata(small_layout, section_bytes, frames):
    cfg = KVTransferConfig(transport="local", section_bytes=section_bytes)
    seq = _seq()
    handoff = KVSender(small_layout, cfg).open(seq)
    stream = get_transport("local").open_receive(handoff.descriptor)
    got = receive_sequence(stream, small_layout)
    assert stream.stats.frames == frames            # the transport's own count
    assert stream.stats.bytes_moved == handoff.run()
    assert got.kv.equal(seq.kv) and got.token_ids == seq.token_ids
