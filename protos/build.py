"""Regenerate the Python modules of the Tandem protos: ``python -m protos.build``.

The generated ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` files are committed, so the
client SDK installs with grpcio and protobuf only (no grpcio-tools, no build hook). This
script is the only way they are made; ``tests/protos/test_generated.py`` regenerates them
into a temporary directory and fails when the committed ones differ.

protoc runs with the repository root as its include path, so a proto's import name is
``protos/tandem/v1/<name>.proto`` and the generated modules import each other as
``protos.tandem.v1.<name>_pb2``: no hand edits of generated code.
"""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

# Generated code embeds the protoc/grpc versions that made it, so generation is pinned.
GRPCIO_TOOLS_VERSION = "1.85.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("protos") / "tandem" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class ProtoBuildError(RuntimeError):
    """protoc failed, or the installed grpcio-tools is not the pinned version."""


def proto_files(root: Path = REPO_ROOT) -> list[Path]:
    """The .proto sources, relative to ``root``, sorted."""
    return sorted(p.relative_to(root) for p in (root / PROTO_DIR).glob("*.proto"))


def generated_files(root: Path = REPO_ROOT) -> list[Path]:
    """The generated modules under ``root``, relative to it, sorted."""
    out = []
    for suffix in GENERATED_SUFFIXES:
        out += (root / PROTO_DIR).glob(f"*{suffix}")
    return sorted(p.relative_to(root) for p in out)


def check_tools_version() -> None:
    """Raise ProtoBuildError unless the pinned grpcio-tools is installed."""
    try:
        installed = metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError as exc:
        raise ProtoBuildError(
            f"grpcio-tools is not installed: pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}") from exc
    if installed != GRPCIO_TOOLS_VERSION:
        raise ProtoBuildError(
            f"grpcio-tools {installed} is installed, generation is pinned to "
            f"{GRPCIO_TOOLS_VERSION}: pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}")


def generate(out_dir: Path = REPO_ROOT, root: Path = REPO_ROOT) -> list[Path]:
    """Run protoc over every proto under ``root``, writing into ``out_dir``; return the outputs."""
    check_tools_version()
    from grpc_tools import protoc  # build-time only: the runtime never imports grpc_tools
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = proto_files(root)
    if not sources:
        raise ProtoBuildError(f"no .proto files under {root / PROTO_DIR}")
    (out_dir / PROTO_DIR).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(s) for s in sources),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise ProtoBuildError(f"protoc exited with {rc}: {' '.join(args)}")
    made = generated_files(out_dir)
    logger.info("generated %d modules from %d protos into %s", len(made), len(sources), out_dir)
    return made


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT,
                        help="directory to write into (default: the repository root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for path in generate(args.out.resolve()):
            print(path)
    except ProtoBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
