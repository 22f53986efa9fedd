"""The package rules of docs/architecture.md, checked on every import in the tree.

Layers run one way: ``cluster`` -> ``router`` -> worker packages -> ``kv_transfer`` ->
``engine`` -> ``tandem_common``; the two worker packages never import each other; the
client side (``loadtest`` -> ``tandem_client`` -> ``protos``) never imports the server. And
the router process never loads torch: its modules import with torch made unimportable.
"""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from torch_block import python_without_torch

ROOT = Path(__file__).resolve().parents[2]

# What each package may import from the project, besides itself.
ALLOWED: dict[str, set[str]] = {
    "tandem_common": set(),
    "protos": set(),
    "engine": {"tandem_common"},
    "kv_transfer": {"engine", "tandem_common"},
    "prefill_worker": {"kv_transfer", "engine", "tandem_common"},
    "decode_worker": {"kv_transfer", "engine", "tandem_common"},
    "router": {"prefill_worker", "decode_worker", "kv_transfer", "engine", "tandem_common", "protos"},
    "tandem_client": {"protos"},
    "loadtest": {"tandem_client", "protos"},
    "cluster": {"router", "prefill_worker", "decode_worker", "kv_transfer", "engine", "tandem_common",
                "protos", "tandem_client", "loadtest"},
}

# Modules the router process imports: none may load torch (or pull in a module that does).
ROUTER_PROCESS = ["cluster.cli", "cluster.serve", "cluster.pools", "cluster.config",
                  "prefill_worker.worker", "decode_worker.worker",      # the pools' actor classes
                  "router.server", "router.backends.ray_pools", "router.http.server",
                  "kv_transfer.codecs", "kv_transfer.transports", "engine.model_info"]


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of a project package in ``path``, at any
    depth (an import inside a function counts: it runs in the same process)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in ALLOWED]
    return found


def violations(root: Path = ROOT) -> list[str]:
    out = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            if package == "protos" and path.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")):
                continue
            for line, target in project_imports(path):
                if target != package and target not in allowed:
                    out.append(f"{path.relative_to(root)}:{line}: {package} must not import {target}")
    return out


def test_every_import_in_the_tree_follows_the_layer_rules():
    assert violations() == []


def test_a_wrong_way_import_is_reported_with_its_file_and_line(tmp_path):
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    (tmp_path / "engine" / "bad.py").write_text("import os\n\ndef f():\n    from router.config import RouterConfig\n")
    (tmp_path / "decode_worker" / "bad.py").write_text("from prefill_worker.messages import PrefillRequest\n")
    assert sorted(violations(tmp_path)) == [
        "decode_worker/bad.py:1: decode_worker must not import prefill_worker",
        "engine/bad.py:4: engine must not import router"]


def test_every_package_of_the_tree_has_a_rule():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages == set(ALLOWED)


IMPORT_ALL = """
import importlib
for module in sys.argv[1:]:
    importlib.import_module(module)
print("torch" in sys.modules)
"""


@pytest.mark.parametrize("module", ROUTER_PROCESS)
def test_the_router_process_imports_without_torch(module):
    run = subprocess.run([*python_without_torch(IMPORT_ALL), module], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False"
