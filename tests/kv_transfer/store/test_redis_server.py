"""The embedded private redis-server: no persistence, LRU, and nothing left running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis

from kv_transfer.redis_server import RedisServer, RedisServerError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_private_server_has_no_persistence_and_evicts_lru():
    with RedisServer(maxmemory="64mb") as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        assert int(client.config_get("maxmemory")["maxmemory"]) == 64 << 20
        assert client.connection_pool.connection_kwargs["host"] == "127.0.0.1"
        client.close()
        pid = server.pid
    assert pid is not None and _wait_gone(pid)
    assert not server.running


def test_private_server_requires_its_generated_password_kept_off_the_command_line():
    with RedisServer() as a, RedisServer() as b:
        assert a.password != b.password and len(a.password) >= 32
        anonymous = redis.Redis(host="127.0.0.1", port=a.port)
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.get("k")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=a.port, password=b.password).get("k")
        anonymous.close()
        client = redis.Redis.from_url(a.url)
        assert client.set("k", b"v") and client.get("k") == b"v"
        client.close()
        with open(f"/proc/{a.pid}/cmdline", "rb") as fh:
            assert a.password.encode() not in fh.read()
        assert a.password not in a.safe_url and a.password not in repr(a)


def test_a_supervised_server_killed_is_restarted_within_5_s_on_the_same_port_and_password():
    others = set(threading.enumerate())
    with RedisServer() as server:
        server.supervise()
        (supervisor,) = [t for t in threading.enumerate()
                         if t.name == "redis-supervisor" and t not in others]
        url, pid = server.url, server.pid
        os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        while not (server.restarts == 1 and server.ping()):
            assert time.monotonic() - start < 5.0, "not restarted within 5 s"
            time.sleep(0.02)
        assert not _alive(pid)                      # reaped, not a zombie
        assert server.url == url and server.pid != pid
        client = redis.Redis.from_url(url)
        assert client.set("k", b"v") and client.get("k") == b"v"
        client.close()
        new_pid = server.pid
    assert _wait_gone(new_pid) and not server.running
    assert not supervisor.is_alive()                    # stop() also ends supervision:
    assert server.pid is None                           # nothing can restart it now


def test_full_server_evicts_instead_of_failing_writes():
    with RedisServer(maxmemory="4mb") as server:
        client = redis.Redis.from_url(server.url)
        blob = b"x" * (256 << 10)
        for i in range(64):  # 16 MB into 4 MB: every SET must still succeed
            assert client.set(f"k{i}", blob)
        assert client.dbsize() < 64
        assert client.get("k63") == blob
        client.close()


def test_stop_is_idempotent_and_restart_after_kill_reuses_the_port():
    server = RedisServer().start()
    port = server.port
    server.kill()
    assert not server.ping()
    server.start()
    assert server.port == port and server.ping()
    server.stop()
    server.stop()
    assert not server.running


def test_bad_settings_raise_a_clear_error_and_leave_nothing():
    with pytest.raises(RedisServerError, match="maxmemory"):
        RedisServer(maxmemory="lots").start()
    with pytest.raises(RedisServerError, match="not found"):
        RedisServer(executable="/nonexistent/redis-server").start()


_OWNER = textwrap.dedent("""
    import signal, sys, time
    # Ctrl-C raises KeyboardInterrupt as in a terminal, whatever this process inherited: a
    # suite started in the background (no job control) passes SIGINT down as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from kv_transfer.redis_server import RedisServer
    server = RedisServer().start()
    print(server.pid, flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_server_dies_with_its_owner(sig):
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        pid = int(owner.stdout.readline())
        assert _alive(pid)
        owner.send_signal(sig)
        # Its exit stops the server (up to 2 s SIGTERM, then SIGKILL); the bound only catches
        # an owner that never exits.
        try:
            owner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            owner.kill()
            pytest.fail(f"the owner ignored {sig.name}: {owner.communicate()[1].decode()[-2000:]}")
        assert _wait_gone(pid), f"redis-server {pid} outlived its owner after {sig.name}"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()
        owner.stderr.close()
