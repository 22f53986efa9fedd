"""`tandem serve` end to end as a user runs it: start, generate, status, Ctrl-C, nothing left."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil

TANDEM = [sys.executable, "-m", "cluster.cli"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_serve_generate_status_then_ctrl_c_stops_everything_it_started():
    proc = subprocess.Popen([*TANDEM, "serve", "--port", "0", "--http-port", "0", "--set", "pools.prefill.cpus_per_worker=0.25",
                             "--set", "pools.decode.cpus_per_worker=0.25", "--set", "model.num_threads=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    lines: list[str] = []
    target = None
    try:
        deadline = time.monotonic() + 240
        while target is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            m = re.search(r"serving gRPC on ([^\s,]+), OpenAI HTTP on ([^\s,]+)", line)
            target, http_base = (m.group(1), m.group(2)) if m else (None, None)
        assert target, "".join(lines)
        started = {p.pid: p for p in _descendants(proc.pid)}
        names = " ".join(p.name() for p in started.values())
        assert "redis-server" in names and "raylet" in names

        gen = subprocess.run([*TANDEM, "generate", "--target", target, "--max-tokens", "12", "Once upon a time"],
                             capture_output=True, text=True, env=ENV, timeout=120)
        assert gen.returncode == 0, gen.stderr
        assert gen.stdout.startswith("Once upon a time, there was a little girl")
        assert "finish=length" in gen.stdout and "prefill=tandem-prefill-0" in gen.stdout

        status = subprocess.run([*TANDEM, "status", "--target", target], capture_output=True, text=True,
                                env=ENV, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "tandem-prefill-0" in status.stdout and "tandem-decode-0" in status.stdout

        import urllib.request
        with urllib.request.urlopen(f"http://{http_base}/health", timeout=30) as resp:
            assert resp.status == 200

        bad = subprocess.run([*TANDEM, "generate", "--target", target, "--max-tokens", "0", "hi"],
                             capture_output=True, text=True, env=ENV, timeout=60)
        assert bad.returncode == 1 and "max_tokens" in bad.stderr

        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        assert "Tandem stopped." in out
        gone, alive = psutil.wait_procs(list(started.values()), timeout=30)
        assert not alive, [p.name() for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_a_bad_config_value_exits_with_the_field_path():
    res = subprocess.run([*TANDEM, "serve", "--set", "pools.prefill.workers=0"], capture_output=True,
                         text=True, env=ENV, timeout=60)
    assert res.returncode == 2
    assert "pools.prefill.workers: must be >= 1, got 0" in res.stderr


def test_an_unknown_routing_policy_exits_with_the_field_and_the_known_names():
    res = subprocess.run([*TANDEM, "serve", "--set", "router.decode_policy=fastest"], capture_output=True,
                         text=True, env=ENV, timeout=60)
    assert res.returncode == 2
    assert "router.decode_policy: unknown name 'fastest'" in res.stderr and "kv_aware" in res.stderr
