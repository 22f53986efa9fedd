"""A private, throw-away ``redis-server`` on a free loopback port.

The embedded default of the global KV store: when no Redis URL is configured, one is
started here with no persistence and an eviction policy (a full store evicts, never
errors), and it is stopped when its owner closes it, when the interpreter exits (also
after Ctrl-C) and, where the OS allows it, when the owning process dies.
"""
from __future__ import annotations

import atexit
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LIVE_SERVERS: set["RedisServer"] = set()
_LIVE_LOCK = threading.Lock()


class RedisServerError(RuntimeError):
    """redis-server could not be found, started, or did not answer in time."""


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


try:  # resolved here, not in the forked child, where loading a library could deadlock
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGTERM redis-server when the
    # thread that spawned it dies, so a SIGKILLed owner leaves nothing behind.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class RedisServer:
    """One private redis-server process.

    ``maxmemory`` is a redis size string ("256mb") and ``policy`` its eviction policy;
    ``port=None`` picks a free loopback port. Use as a context manager or call
    ``start()`` / ``stop()``; ``stop()`` is idempotent and also runs at exit.
    """

    def __init__(self, port: int | None = None, maxmemory: str = "256mb",
                 policy: str = "allkeys-lru", executable: str | None = None,
                 start_timeout_s: float = 10.0) -> None:
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be > 0, got {start_timeout_s}")
        self.port = port
        self.maxmemory = maxmemory
        self.policy = policy
        self.executable = executable or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RedisServerError("redis-server has not been started")
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> "RedisServer":
        """Start the server and wait until it answers PING."""
        if self.running:
            return self
        if not os.path.exists(self.executable):
            raise RedisServerError(
                f"redis-server not found at {self.executable}; install it "
                "(Debian: apt-get install redis-server) or configure a Redis URL")
        if self.port is None:
            self.port = free_loopback_port()
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="tandem-redis-")
        cmd = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", self._workdir.name,
               "--maxmemory", self.maxmemory, "--maxmemory-policy", self.policy,
               "--protected-mode", "yes", "--loglevel", "warning", "--daemonize", "no",
               "--logfile", self._log_path()]
        preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        with open(self._log_path() + ".out", "ab") as out:  # config errors go to stderr
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, preexec_fn=preexec)
        with _LIVE_LOCK:
            _LIVE_SERVERS.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("started private redis-server pid=%d on %s (maxmemory %s, %s)",
                    self._proc.pid, self.url, self.maxmemory, self.policy)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RedisServerError(f"redis-server exited during start: {self._log_tail()}")
            if self.ping(timeout_s=0.2):
                return
            time.sleep(0.02)
        raise RedisServerError(f"redis-server did not answer PING within {self.start_timeout_s}s")

    def _log_path(self) -> str:
        if self._workdir is None:
            raise RedisServerError("no work directory")
        return os.path.join(self._workdir.name, "redis.log")

    def _log_tail(self) -> str:
        text = ""
        for path in (self._log_path() + ".out", self._log_path()):
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text += fh.read()[-1000:]
            except OSError:
                pass
        return text.strip() or "(no log)"

    def ping(self, timeout_s: float = 0.5) -> bool:
        """True if the server answers a raw RESP PING now."""
        if self.port is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its work directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=timeout_s)
            logger.info("stopped private redis-server pid=%d", proc.pid)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        with _LIVE_LOCK:
            _LIVE_SERVERS.discard(self)

    def kill(self) -> None:
        """SIGKILL the server without cleanup (fault injection); ``start()`` may follow."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5.0)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"


@atexit.register
def _stop_all_servers() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE_SERVERS)
    for server in servers:
        try:
            server.stop(timeout_s=2.0)
        except Exception:  # at exit, one failure must not keep the others running
            logger.exception("failed to stop %r at exit", server)
