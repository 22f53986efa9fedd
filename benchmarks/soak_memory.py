"""Memory soak: RSS of every process of a real ``tandem serve`` under minutes of steady load.

    .venv/bin/python -m benchmarks.soak_memory [--minutes 5] [--rate 20] [--warmup-s 30]

Starts ``tandem serve`` (the embedded defaults: disaggregated, private Redis, embedded Ray)
as a subprocess, then sends ``--rate`` requests/s (open loop, short story prompts with a
shared prefix, 16 tokens each) from this process through the SDK. After ``--warmup-s`` it
samples the RSS of the router (the serve process) and each of its descendants (Ray's GCS,
raylet and agents, the pool workers, redis-server) every ``--sample-s``. The baseline is the
same run's first half: a process that leaks grows as much per request in the second half as
in the first; one that plateaus does not. One JSON line per process, then a summary line:
rss at start and end (MiB), bytes per request over the whole soak and over each half.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Once upon a time", "Lily and Ben went to the park", "Tom had a red ball",
           "One day, a cat", "The sun was shining and", "Sara wanted to"]
SHARED = "The kind old man told the children a story about a brave little fox. " * 3


def _label(p: psutil.Process) -> str:
    name = p.name()
    if name.startswith("ray::"):
        return name[5:].split(".")[0]         # ray::DecodeWorker.poll -> DecodeWorker
    try:
        cmd = " ".join(p.cmdline()[:3])
    except psutil.Error:
        cmd = name
    if "dashboard" in cmd or "agent" in cmd:
        return name + ":" + ("agent" if "agent" in cmd else "dashboard")
    return name


def _rss(root: psutil.Process) -> dict[str, int]:
    """RSS bytes by process label (the router is ``router``; same labels are summed)."""
    out = {"router": root.memory_info().rss}
    for p in root.children(recursive=True):
        try:
            label = _label(p)
            out[label] = out.get(label, 0) + p.memory_info().rss
        except psutil.Error:
            continue
    return out


def _start_serve() -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "serve", "--port", "0",
                             "--no-http", "--set", "pools.prefill.cpus_per_worker=0.25",
                             "--set", "pools.decode.cpus_per_worker=0.25"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        m = re.search(r"serving gRPC on (\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise SystemExit("tandem serve did not start")


async def _load(target: str, rate: float, seconds: float, counts: dict) -> None:
    from tandem_client import AsyncTandemClient

    async with AsyncTandemClient(target, timeout=60, retries=0) as client:
        tasks: set[asyncio.Task] = set()

        async def one(i: int) -> None:
            try:
                await client.generate(SHARED + PROMPTS[i % len(PROMPTS)], max_tokens=16,
                                      temperature=0.8, seed=i)
                counts["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - counted, the soak goes on
                kind = type(exc).__name__
                counts[kind] = counts.get(kind, 0) + 1
                if counts[kind] <= 3:
                    print(f"soak: request {i}: {kind}: {exc}", file=sys.stderr, flush=True)

        start = time.monotonic()
        i = 0
        while (now := time.monotonic()) < start + seconds:
            wait = start + i / rate - now
            if wait > 0:
                await asyncio.sleep(wait)
            t = asyncio.create_task(one(i))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        counts["sent"] = i
        if tasks:
            await asyncio.wait(tasks, timeout=60)


async def _soak(args, root: psutil.Process, target: str) -> tuple[list, dict]:
    counts = {"ok": 0}
    load = asyncio.create_task(_load(target, args.rate, args.warmup_s + 60 * args.minutes, counts))
    await asyncio.sleep(args.warmup_s)
    samples = []
    end = time.monotonic() + 60 * args.minutes
    while time.monotonic() < end and not load.done():
        samples.append((time.monotonic(), counts["ok"], _rss(root)))
        print(f"soak: {len(samples)} samples, {counts['ok']} requests ok", file=sys.stderr, flush=True)
        await asyncio.sleep(args.sample_s)
    samples.append((time.monotonic(), counts["ok"], _rss(root)))
    await load
    return samples, counts


def _per_request(a, b, label: str) -> float | None:
    (_, n0, r0), (_, n1, r1) = a, b
    if n1 <= n0 or label not in r0 or label not in r1:
        return None
    return (r1[label] - r0[label]) / (n1 - n0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    args = parser.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.warmup_s < 0 or args.sample_s <= 0:
        parser.error("--minutes, --rate and --sample-s must be > 0, --warmup-s >= 0")
    proc, target = _start_serve()
    try:
        root = psutil.Process(proc.pid)
        samples, counts = asyncio.run(_soak(args, root, target))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    first, mid, last = samples[0], samples[len(samples) // 2], samples[-1]
    for label in sorted(last[2]):
        if label not in first[2]:
            continue
        halves = (_per_request(first, mid, label), _per_request(mid, last, label))
        print(json.dumps({
            "benchmark": "soak_memory", "process": label,
            "rss_start_mib": round(first[2][label] / 2**20, 1),
            "rss_end_mib": round(last[2][label] / 2**20, 1),
            "bytes_per_request": _round(_per_request(first, last, label)),
            "bytes_per_request_first_half": _round(halves[0]),
            "bytes_per_request_second_half": _round(halves[1])}), flush=True)
    print(json.dumps({"benchmark": "soak_memory", "summary": True, "minutes": args.minutes,
                      "rate_rps": args.rate, "warmup_s": args.warmup_s,
                      "requests_measured": last[1] - first[1], "outcomes": counts,
                      "elapsed_s": round(last[0] - first[0], 1)}), flush=True)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


if __name__ == "__main__":
    main()
