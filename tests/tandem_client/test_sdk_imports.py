"""The SDK imports with grpcio and protobuf only: no torch, no ray, no server code."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

_BLOCKED_IMPORT_PROBE = textwrap.dedent("""
    import sys

    BLOCKED = ("torch", "ray", "engine", "router", "cluster", "grpc_tools", "lmcache", "numpy")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    import tandem_client
    from tandem_client import TandemClient, AsyncTandemClient, InvalidArgument
    client = TandemClient("127.0.0.1:1", timeout=1, retries=0)
    stream = client.stream("hello", max_tokens=3, temperature=0.5, stop=["."])
    client.close()
    loaded = sorted({m.split(".")[0] for m in sys.modules})
    print(" ".join(loaded))
""")


def test_sdk_imports_and_builds_requests_with_torch_and_ray_blocked():
    proc = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORT_PROBE], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    assert {"tandem_client", "grpc", "google", "protos"} <= loaded
    assert not loaded & {"torch", "ray", "engine", "router", "cluster", "numpy"}


def test_blocker_really_blocks():
    probe = _BLOCKED_IMPORT_PROBE.replace("import tandem_client\n", "import tandem_client\nimport router\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "blocked import of router" in proc.stderr
