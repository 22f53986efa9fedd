"""A private, throw-away ``redis-server`` on a free loopback port.

The embedded default of the global KV store: when no Redis URL is configured, one is
started here with no persistence and an eviction policy (a full store evicts, never
errors), and it is stopped when its owner closes it, when the interpreter exits (also
after Ctrl-C) and, where the OS allows it, when the owning process dies.

It requires a password generated at start (``secrets``), written to a config file in its
private 0700 work directory, never on its command line: other local users can neither
read nor write the cached KV. ``supervise()`` watches the process and restarts it on the
same port and password when it dies (backoff 0.1 s doubling to 2 s); its contents are
lost (a cache), and clients reconnect on their next call.
"""
from __future__ import annotations

import atexit
import ctypes
import logging
import os
import secrets
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

    def __init__(self, port: int | None = None, maxmemory: str = "512mb",
                 policy: str = "allkeys-lru", executable: str | None = None,
                 start_timeout_s: float = 10.0, password: str | None = None) -> None:
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be > 0, got {start_timeout_s}")
        if password is not None and (not password or any(c.isspace() or c in "\"'@:/" for c in password)):
            raise ValueError("password must be non-empty, without spaces, quotes, '@', ':' or '/'")
        self.port = port
        self.password = password or secrets.token_urlsafe(24)
        self.maxmemory = maxmemory
        self.policy = policy
        self.executable = executable or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._lock = threading.RLock()
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()
        self.restarts = 0

    @property
    def url(self) -> str:
        """``redis://:<password>@127.0.0.1:<port>`` (log ``safe_url``, never this)."""
        if self.port is None:
            raise RedisServerError("redis-server has not been started")
        return f"redis://:{self.password}@127.0.0.1:{self.port}"

    @property
    def safe_url(self) -> str:
        return f"redis://:***@127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> "RedisServer":
        """Start the server and wait until it answers PING."""
        with self._lock:
            return self._start()

    def _start(self) -> "RedisServer":
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
        conf = os.path.join(self._workdir.name, "redis.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"requirepass {self.password}\n")
        cmd = [self.executable, conf, "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", self._workdir.name,
               "--maxmemory", self.maxmemory, "--maxmemory-policy", self.policy,
               "--protected-mode", "yes", "--loglevel", "warning", "--daemonize", "no",
               "--logfile", self._log_path()]
        # Linux signals on the death of the spawning *thread*: only long-lived ones qualify.
        here = threading.current_thread()
        preexec = _die_with_parent if here in (threading.main_thread(), self._watcher) else None
        # Its own session: a terminal's Ctrl-C (SIGINT to the whole foreground group) must not
        # reach it, or the supervisor would restart it while `tandem serve` shuts down. It
        # still dies with its parent (above) and is stopped by stop().
        with open(self._log_path() + ".out", "ab") as out:  # config errors go to stderr
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, preexec_fn=preexec,
                                          start_new_session=True)
        with _LIVE_LOCK:
            _LIVE_SERVERS.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("started private redis-server pid=%d on %s (maxmemory %s, %s)",
                    self._proc.pid, self.safe_url, self.maxmemory, self.policy)
        return self

    def supervise(self, poll_s: float = 0.1, max_backoff_s: float = 2.0) -> "RedisServer":
        """Restart the server whenever it dies, until ``stop()``; idempotent."""
        with self._lock:
            if self._watcher is None:
                self._stopping.clear()
                self._watcher = threading.Thread(target=self._watch, args=(poll_s, max_backoff_s),
                                                 name="redis-supervisor", daemon=True)
                self._watcher.start()
        return self

    def _watch(self, poll_s: float, max_backoff_s: float) -> None:
        backoff = poll_s
        while not self._stopping.wait(poll_s):
            with self._lock:
                proc = self._proc
                if self._stopping.is_set() or proc is None or proc.poll() is None:
                    backoff = poll_s
                    continue
                logger.warning("private redis-server pid=%d exited with %s; restarting it on %s",
                               proc.pid, proc.returncode, self.safe_url)
                try:
                    self._proc = None
                    self._start()
                    self.restarts += 1
                    backoff = poll_s
                    continue
                except (RedisServerError, OSError) as exc:
                    self._proc = proc          # still dead: the next round retries
                    logger.warning("restarting redis-server failed (retry in %.1f s): %s", backoff, exc)
            if self._stopping.wait(backoff):
                return
            backoff = min(max_backoff_s, backoff * 2)

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
        """True if the server accepts our password and answers PING now (raw RESP)."""
        if self.port is None:
            return False
        pw = self.password.encode()
        request = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(pw), pw)
        want = b"+OK\r\n+PONG\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as sock:
                sock.sendall(request)
                got = b""
                while len(got) < len(want) and want.startswith(got):
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    got += chunk
                return got == want
        except OSError:
            return False

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its work directory."""
        self._stopping.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout_s)
        with self._lock:
            self._stop(timeout_s)

    def _stop(self, timeout_s: float) -> None:
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
        with self._lock:
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
