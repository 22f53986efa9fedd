"""KV transport bandwidth: the ``ray`` transport between two actors vs a single-thread memcpy.

    .venv/bin/python -m benchmarks.kv_transport [--quick] [--reps R]
    .venv/bin/python -m benchmarks.kv_transport --cross-node [--rounds N]   # same node vs another

Payloads are the wire-blob sizes of llama-100m fp16 KV (12 layers, 4 KV heads, head dim 64)
at 512 and 2,048 tokens, plus a 128 MiB one. For each size, in one run:

* ``memcpy``: ``np.copyto`` of the same bytes, one thread: ``cold`` (preallocated buffers
  rotating over more memory than the L3 holds: the baseline), ``hot`` (cache-resident when
  the payload fits the L3), ``fresh`` (a new buffer, page faults included);
* ``ray``: a sender actor ``ray.put``s the frames, a receiver actor ``ray.get``s them
  (zero-copy, read-only numpy views), in three modes: ``complete-1`` (one frame),
  ``complete-L`` (one frame per layer), ``streamed-L`` (one frame per layer, the receiver
  long-polling the sender while it publishes), and ``streamed-S`` (as the hand-off sends:
  ``kv_transfer.section_bytes`` of 4 MiB a frame, in whole layers). ``gbps`` counts the data plane: the
  sender's puts plus the receiver's gets; ``end_to_end_gbps`` also counts handing the
  descriptor through the driver (two actor calls), from the first put to the receiver
  holding every frame (``time.perf_counter`` is system-wide on Linux);
* ``ray+read``: as ``complete-1`` but the receiver also reads every byte once (CRC-32),
  against memcpy + the same read in-process.

The object store is warmed first (every page touched once, as in a server that has been
up a while): a cold store pays a page fault per 4 KiB on each put and runs several times
slower; its put speed is reported as ``cold_put_gbps``. Medians over ``--reps``;
``vs_memcpy_cold`` is the ratio of bandwidths to the cold single-thread memcpy.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import zlib

import numpy as np

BENCH = "kv_transport"
LAYERS = 12
SECTION_BYTES = 4 << 20        # kv_transfer.section_bytes' default: whole layers up to 4 MiB a frame
STORE_BYTES = 768 << 20


def emit(**fields) -> None:
    print(json.dumps({"bench": BENCH, **fields}), flush=True)


def kv_blob_size(tokens: int) -> int:
    return LAYERS * 2 * tokens * 4 * 64 * 2


def memcpy_gbps(size: int, reps: int) -> dict[str, float]:
    """Single-thread ``np.copyto`` GB/s: ``hot`` (same preallocated buffers each time:
    cache-resident below the 32 MiB L3), ``cold`` (rotating over preallocated buffers
    that together exceed the cache, as a transfer's bytes would be), ``fresh`` (a new
    destination each time, page faults included), ``with_read`` (cold copy + CRC-32)."""
    rng = np.random.default_rng(0)
    count = max(2, (256 << 20) // size + 1)
    sources = [rng.integers(0, 255, size, dtype=np.uint8) for _ in range(count)]
    targets = [np.ones(size, dtype=np.uint8) for _ in range(count)]
    hot, cold, fresh, read = [], [], [], []
    for i in range(reps + 1):
        j = (2 * i + 1) % count
        t0 = time.perf_counter()
        np.copyto(targets[0], sources[0])
        t1 = time.perf_counter()
        np.copyto(targets[j], sources[j])
        t2 = time.perf_counter()
        np.array(sources[(j + 1) % count], copy=True)
        t3 = time.perf_counter()
        k = (j + 2) % count
        np.copyto(targets[k], sources[k])
        zlib.crc32(targets[k])
        t4 = time.perf_counter()
        if i:
            hot.append(t1 - t0)
            cold.append(t2 - t1)
            fresh.append(t3 - t2)
            read.append(t4 - t3)
    return {name: size / statistics.median(x) / 1e9
            for name, x in (("hot", hot), ("cold", cold), ("fresh", fresh), ("with_read", read))}


def _actors(placed: bool = False):
    import ray
    from kv_transfer.transports import RayKVSource, get_transport

    @ray.remote(max_concurrency=2)
    class Sender(RayKVSource):
        def __init__(self):
            self.payloads = {}
            self.last_sent = {}

        def prepare(self, size: int, frames: int) -> None:
            data = np.random.default_rng(size).integers(0, 255, size, dtype=np.uint8)
            self.payloads[(size, frames)] = np.array_split(data, frames)

        def warm_store(self, total: int) -> float:
            """Touch every page of the object store once; returns the cold put GB/s."""
            block = np.ones(32 << 20, dtype=np.uint8)
            t0 = time.perf_counter()
            for _ in range(max(1, total // block.nbytes)):
                ref = ray.put(block)
                del ref
            return total / (time.perf_counter() - t0) / 1e9

        def send(self, transfer_id: str, size: int, frames: int, streaming: bool):
            """(t_start, put seconds or None when streamed, descriptor)."""
            import threading
            transport = get_transport("ray", streaming=streaming)
            parts = self.payloads[(size, frames)]
            stream = transport.open_send(transfer_id, max_bytes=size + 1)
            t0 = time.perf_counter()
            if streaming:
                threading.Thread(target=self._publish, args=(transfer_id, stream, parts)).start()
                return t0, None, stream.descriptor
            self._publish(transfer_id, stream, parts)
            return t0, time.perf_counter() - t0, stream.descriptor

        def _publish(self, transfer_id, stream, parts) -> None:
            for part in parts:
                stream.send(part)
            self.last_sent[transfer_id] = time.perf_counter()
            stream.close()

        def last_sent_at(self, transfer_id: str) -> float:
            return self.last_sent.pop(transfer_id)

    @ray.remote
    class Receiver:
        def receive(self, descriptor, read: bool = False) -> tuple[float, float, int]:
            """(get seconds, t_end, bytes)."""
            t0 = time.perf_counter()
            frames = list(get_transport("ray").open_receive(descriptor))
            if read:
                for frame in frames:
                    zlib.crc32(frame)
            t1 = time.perf_counter()
            return t1 - t0, t1, sum(f.nbytes for f in frames)

    if not placed:
        return Sender.remote(), Receiver.remote()
    # --cross-node: the sender and one receiver on node A, another receiver on node B.
    # num_cpus=0: an actor holds a CPU by default, and node A hosts two of them.
    return (Sender.options(num_cpus=0, resources={"kvbench_a": 1}).remote(),
            Receiver.options(num_cpus=0, resources={"kvbench_a": 1}).remote(),
            Receiver.options(num_cpus=0, resources={"kvbench_b": 1}).remote())


def ray_gbps(sender, receiver, size: int, frames: int, mode: str, reps: int,
             read: bool = False, tag: str = "") -> tuple[float, float, float]:
    """(data-plane GB/s, end-to-end GB/s, tail ms), medians. The tail is how long after the
    sender's last frame the receiver held everything: what a streamed transfer adds to a
    prefill that published its layers as it computed them."""
    import ray
    ray.get(sender.prepare.remote(size, frames))
    plane, whole, tail = [], [], []
    for i in range(reps + 1):                       # the first is a warm-up
        tid = f"{mode}-{size}-{frames}-{i}-{read}{tag}"
        t0, put_s, descriptor = ray.get(sender.send.remote(tid, size, frames, mode == "streamed"))
        get_s, t_end, got = ray.get(receiver.receive.remote(descriptor, read))
        if got != size:
            raise RuntimeError(f"received {got} bytes of {size}")
        last = ray.get(sender.last_sent_at.remote(tid))
        if i:
            # streamed: puts and gets overlap, so its data plane is the whole span
            plane.append(t_end - t0 if put_s is None else put_s + get_s)
            whole.append(t_end - t0)
            tail.append(t_end - last)
    return (size / statistics.median(plane) / 1e9, size / statistics.median(whole) / 1e9,
            statistics.median(tail) * 1e3)


def cross_node(sizes: dict[str, int], reps: int, rounds: int) -> None:
    """The hand-off's streamed sections (``streamed-S``) from a sender to a receiver on its own
    Ray node and to one on another node of a local Ray cluster (two raylets, two object
    stores: the KV crosses stores as between machines, without a network), interleaved
    round by round. Medians over rounds of each round's median."""
    import ray
    from ray.cluster_utils import Cluster
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for name in ("kvbench_a", "kvbench_b"):
            nodes.add_node(num_cpus=1, resources={name: 2}, object_store_memory=STORE_BYTES)
        nodes.wait_for_nodes()
        ray.init(address=nodes.address, log_to_driver=False, configure_logging=False)
        sender, same, other = _actors(placed=True)
        ray.get(sender.warm_store.remote(STORE_BYTES))
        for label, size in sizes.items():
            frames = max(1, min(LAYERS, -(-size // SECTION_BYTES)))
            got: dict[str, list[tuple[float, float, float]]] = {"same-node": [], "cross-node": []}
            for r in range(rounds):
                order = (("same-node", same), ("cross-node", other))
                for placement, receiver in order if r % 2 == 0 else order[::-1]:
                    got[placement].append(ray_gbps(sender, receiver, size, frames, "streamed", reps,
                                                   tag=f"-{placement}-{r}"))
            med = {p: [statistics.median(x[i] for x in v) for i in range(3)] for p, v in got.items()}
            for placement, (plane, whole, tail) in med.items():
                emit(kind="ray-placement", mode=f"streamed-{frames}", placement=placement, payload=label,
                     bytes=size, gbps=round(plane, 3), end_to_end_gbps=round(whole, 3), tail_ms=round(tail, 3))
            emit(kind="ray-placement-ratio", payload=label, bytes=size,
                 cross_over_same_gbps=round(med["cross-node"][0] / med["same-node"][0], 3),
                 cross_minus_same_tail_ms=round(med["cross-node"][2] - med["same-node"][2], 3))
    finally:
        ray.shutdown()
        nodes.shutdown()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--cross-node", action="store_true",
                    help="only the hand-off's sections, same Ray node vs another node (cross_node)")
    ap.add_argument("--rounds", type=int, default=3, help="--cross-node: interleaved rounds")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else args.reps
    sizes = {"512_tokens": kv_blob_size(512), "2048_tokens": kv_blob_size(2048)}
    if not args.quick:
        sizes["128MiB"] = 128 << 20

    import ray
    for key, value in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}.items():
        os.environ.setdefault(key, value)
    if args.cross_node:
        cross_node(sizes, reps, args.rounds)
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=STORE_BYTES, runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
    try:
        sender, receiver = _actors()
        cold = ray.get(sender.warm_store.remote(STORE_BYTES))
        emit(kind="setup", object_store_bytes=STORE_BYTES, cold_put_gbps=round(cold, 3), reps=reps)
        for label, size in sizes.items():
            mem = memcpy_gbps(size, reps)
            emit(kind="memcpy", payload=label, bytes=size, **{f"{k}_gbps": round(v, 3) for k, v in mem.items()})
            by_bytes = max(1, min(LAYERS, -(-size // SECTION_BYTES)))   # the hand-off's sections
            for mode, frames in (("complete", 1), ("complete", LAYERS), ("streamed", LAYERS),
                                 ("streamed", by_bytes)):
                plane, whole, tail = ray_gbps(sender, receiver, size, frames, mode, reps)
                emit(kind="ray", mode=f"{mode}-{frames}", payload=label, bytes=size, gbps=round(plane, 3),
                     end_to_end_gbps=round(whole, 3), tail_ms=round(tail, 3),
                     vs_memcpy_cold=round(plane / mem["cold"], 3), vs_memcpy_hot=round(plane / mem["hot"], 3),
                     end_to_end_vs_memcpy_cold=round(whole / mem["cold"], 3))
            plane, whole, _ = ray_gbps(sender, receiver, size, 1, "complete", reps, read=True)
            emit(kind="ray+read", mode="complete-1", payload=label, bytes=size, gbps=round(plane, 3),
                 end_to_end_gbps=round(whole, 3), vs_memcpy_with_read=round(plane / mem["with_read"], 3))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
