"""The ray transport between two real Ray actors: complete and layer-wise streamed transfers."""
from __future__ import annotations

import time

import numpy as np
import pytest
import ray

from tests.kv_transfer.ray_actors import Receiver, Sender, kv_for


@pytest.fixture(scope="module")
def actors():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}})
    try:
        yield Sender.remote(), Receiver.remote()
    finally:
        ray.shutdown()


def test_complete_transfer_via_a_descriptor_the_driver_passes_along(actors):
    sender, receiver = actors
    descriptor, size = ray.get(sender.publish_sequence.remote("ray-complete", seed=1))
    assert descriptor.total_bytes == size and descriptor.refs is not None
    kv, tokens, rng, zero_copy = ray.get(receiver.fetch_sequence.remote(descriptor))   # router hop
    assert np.array_equal(kv, kv_for(1).numpy()) and tokens == list(range(49)) and rng == b"rng"
    assert zero_copy, "the receiver should read the object store's buffer without a copy"


def test_streamed_sections_are_imported_before_the_last_layer_exists(actors):
    sender, receiver = actors
    descriptor = ray.get(sender.start_stream.remote("ray-stream", seed=2, layers_now=2))
    ray.get(receiver.start_receive.remote(descriptor))
    deadline = time.monotonic() + 30
    while ray.get(receiver.progress.remote()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ray.get(receiver.progress.remote()) == 2       # the sender is paused after layer 1
    assert ray.get(sender.finish_stream.remote("ray-stream")) > 0
    status, kv = ray.get(receiver.result.remote())
    assert status == "ok" and np.array_equal(kv, kv_for(2).numpy())


def test_a_streamed_transfer_that_stalls_times_out_at_the_receiver(actors):
    sender, receiver = actors
    descriptor = ray.get(sender.start_stream.remote("ray-stall", seed=3, layers_now=1))
    ray.get(receiver.start_receive.remote(descriptor, deadline_s=1.0))
    assert ray.get(receiver.result.remote())[0] == "KVTransferTimeout"
    with pytest.raises(ray.exceptions.RayTaskError, match="receiver gave up"):
        ray.get(sender.finish_stream.remote("ray-stall"))    # the sender learns it, typed


def test_a_sender_abort_reaches_the_receiver(actors):
    sender, receiver = actors
    descriptor = ray.get(sender.start_stream.remote("ray-abort", seed=4, layers_now=3))
    ray.get(receiver.start_receive.remote(descriptor))
    ray.get(sender.abort_stream.remote("ray-abort", "prefill worker out of memory"))
    status, message = ray.get(receiver.result.remote())
    assert status == "KVTransferFailed" and "out of memory" in message


def test_size_limits_on_the_sender_and_the_receiver(actors):
    sender, receiver = actors
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(sender.publish_sequence.remote("ray-big", seed=5, max_bytes=1000))
    assert "KVTransferTooLarge" in str(info.value)
    descriptor, size = ray.get(sender.publish_sequence.remote("ray-big-2", seed=5))
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(receiver.fetch_sequence.remote(descriptor, max_bytes=size - 1))
    assert "KVTransferTooLarge" in str(info.value)
