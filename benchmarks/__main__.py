"""Run benchmarks, each in its own process; their JSON lines go to stdout.

    .venv/bin/python -m benchmarks [--list] [NAME ...] [-- ARGS FOR EACH]

Without names, every ``benchmarks/*.py`` module with a top-level ``main()`` runs, in name
order, except the opt-in ones (``OPT_IN``: they install a peer system or run for long), which
run only when named. A separate process per module keeps thread settings, memory and Ray state apart.
Exits non-zero if any benchmark failed (the others still run).
"""
from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run only when named: vs_vllm installs vLLM (~1 GB) into .venv-peer and runs 30-40 min
# (``make bench-peer``).
OPT_IN = {"vs_vllm", "lm_eval_check"}
# Telemetry off for anything that imports lmcache or ray.
CHILD_ENV = {"LMCACHE_TRACK_USAGE": "false", "DO_NOT_TRACK": "1", "RAY_AUTH_MODE": "disabled",
             "RAY_USAGE_STATS_ENABLED": "0"}


def discover() -> list[str]:
    """Module names under benchmarks/ that define a top-level ``main`` function."""
    names = []
    for path in sorted(HERE.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError as exc:
            print(f"benchmarks: skipping {path.name}: {exc}", file=sys.stderr)
            continue
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            names.append(path.stem)
    return names


def main() -> None:
    argv = sys.argv[1:]
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    available = discover()
    if args.list:
        print("\n".join(available))
        return
    names = ([n.removeprefix("benchmarks.").removesuffix(".py") for n in args.names]
             or [n for n in available if n not in OPT_IN])
    unknown = [n for n in names if n not in available]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available}")
    env = {**os.environ, **CHILD_ENV}
    root = str(HERE.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    failed = []
    for name in names:
        print(f"benchmarks: running {name}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *passthrough], cwd=root, env=env)
        print(f"benchmarks: {name} exited {rc} after {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks: failed: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
