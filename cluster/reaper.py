"""Stop every process a ``tandem serve`` started once it is gone, even after SIGKILL.

Ray's own processes (GCS, raylet, the dashboard and runtime-env agents, workers) notice a
dead driver late or never: after ``kill -9`` of ``tandem serve`` its agents lived on for up
to ~80 s. ``start_reaper()`` spawns this module as a small watcher process holding the read
end of a pipe; it records the owner's descendants every ``poll`` and, when the pipe reaches
EOF (the owner exited, any way), terminates the recorded ones still alive, then kills what
ignores SIGTERM. A normal stop has already stopped everything, so it then finds nothing.

    python -m cluster.reaper <owner pid>      (started by start_reaper; stdin is the pipe)
"""
from __future__ import annotations

import os
import select
import subprocess
import sys

import psutil

POLL_S = 0.25
GRACE_S = 3.0


def start_reaper(owner_pid: int | None = None) -> subprocess.Popen:
    """Spawn the watcher for ``owner_pid`` (this process); keep the handle alive until exit."""
    return subprocess.Popen([sys.executable, "-m", "cluster.reaper", str(owner_pid or os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _descendants(owner: psutil.Process, me: int) -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in owner.children(recursive=True) if p.pid != me}
    except psutil.Error:
        return {}


def reap(procs: list[psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM each process still alive (``psutil`` checks it is the same one), then SIGKILL."""
    alive = []
    for p in procs:
        try:
            if p.is_running():
                p.terminate()
                alive.append(p)
        except psutil.Error:
            pass
    _, stubborn = psutil.wait_procs(alive, timeout=grace_s)
    for p in stubborn:
        try:
            p.kill()
        except psutil.Error:
            pass


def watch(owner_pid: int, pipe_fd: int = 0, poll_s: float = POLL_S) -> None:
    owner = psutil.Process(owner_pid)
    me = os.getpid()
    seen: dict[int, psutil.Process] = {}
    while True:
        seen.update(_descendants(owner, me))
        readable, _, _ = select.select([pipe_fd], [], [], poll_s)
        if readable and not os.read(pipe_fd, 4096):
            break                                   # EOF: the owner is gone
    reap(list(seen.values()))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m cluster.reaper <owner pid>", file=sys.stderr)
        return 2
    try:
        watch(int(argv[0]))
    except psutil.NoSuchProcess:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
