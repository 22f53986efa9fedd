"""`tandem serve` end to end as a user runs it: start, generate, status, Ctrl-C, nothing left."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil

from torch_block import python_without_torch

TANDEM = [sys.executable, "-m", "cluster.cli"]
# `tandem serve` in a process where torch cannot be imported: the router, its Ray backend and
# the pools' creation never load the model runtime (only the actors do, in their processes).
TANDEM_WITHOUT_TORCH = python_without_torch("from cluster.cli import main\nsys.exit(main())")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _serve(tandem: list[str] = TANDEM) -> tuple[subprocess.Popen, list[str], str | None, str | None]:
    """Start `tandem serve` on free ports; (process, output lines, gRPC target, HTTP address)."""
    proc = subprocess.Popen([*tandem, "serve", "--port", "0", "--http-port", "0", "--set", "pools.prefill.cpus_per_worker=0.25",
                             "--set", "pools.decode.cpus_per_worker=0.25", "--set", "model.num_threads=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)     # its own group, as a terminal's job
    lines: list[str] = []
    target = http_base = None
    deadline = time.monotonic() + 240
    while target is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        m = re.search(r"serving gRPC on ([^\s,]+), OpenAI HTTP on ([^\s,]+)", line)
        target, http_base = (m.group(1), m.group(2)) if m else (None, None)
    return proc, lines, target, http_base


def test_serve_generate_status_then_ctrl_c_stops_everything_it_started():
    """Served by a process that cannot import torch: the router side never loads it."""
    proc, lines, target, http_base = _serve(TANDEM_WITHOUT_TORCH)
    try:
        assert target, "".join(lines)
        assert not any("SIGTERM handler is not set" in line for line in lines), "".join(lines)
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
        assert status.stdout.startswith("model stories260K (float32), mode disaggregated"), status.stdout

        import urllib.request
        with urllib.request.urlopen(f"http://{http_base}/health", timeout=30) as resp:
            assert resp.status == 200

        shaped = subprocess.run([*TANDEM, "generate", "--target", target, "--max-tokens", "12",
                                 "--stop", " girl", "--repetition-penalty", "1.0", "--top-k", "1",
                                 "--logprobs", "2", "Once upon a time"],
                                capture_output=True, text=True, env=ENV, timeout=120)
        assert shaped.returncode == 0, shaped.stderr
        assert shaped.stdout.startswith("Once upon a time, there was a little\n"), shaped.stdout
        assert "[8 tokens, finish=stop" in shaped.stdout and shaped.stdout.count("  token ") == 8
        assert " top " in shaped.stdout

        bad = subprocess.run([*TANDEM, "generate", "--target", target, "--max-tokens", "0", "hi"],
                             capture_output=True, text=True, env=ENV, timeout=60)
        assert bad.returncode == 1 and "max_tokens" in bad.stderr

        os.killpg(proc.pid, signal.SIGINT)     # Ctrl-C: SIGINT to the whole foreground group
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        assert "Tandem stopped." in out
        assert "restarting it" not in out, out      # the private Redis is not caught in the Ctrl-C
        gone, alive = psutil.wait_procs(list(started.values()), timeout=30)
        assert not alive, [p.name() for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_after_kill_9_of_serve_nothing_it_started_outlives_it_for_long():
    proc, lines, target, _ = _serve()
    try:
        assert target, "".join(lines)
        started = _descendants(proc.pid)
        names = " ".join(p.name() for p in started)
        assert "raylet" in names and "gcs_server" in names, names
        proc.kill()
        proc.wait(30)
        gone, alive = psutil.wait_procs(started, timeout=20)   # Ray's own agents: up to ~80 s
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


def test_a_port_in_use_exits_with_one_line_before_starting_anything():
    import socket

    for flag in ("--port", "--http-port"):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            other = ["--http-port", "0"] if flag == "--port" else ["--port", "0"]
            res = subprocess.run([*TANDEM, "serve", flag, str(port), *other], capture_output=True,
                                 text=True, env=ENV, timeout=60)
        field = "router.grpc_port" if flag == "--port" else "router.http_port"
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert lines == [f"tandem: error: {field}: cannot listen on 127.0.0.1:{port}: "
                         "Address already in use"], res.stderr
