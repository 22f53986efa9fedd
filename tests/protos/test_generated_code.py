"""The committed generated modules are exactly what ``python -m protos.build`` makes."""
from __future__ import annotations

import subprocess
import sys

from protos import build


def test_committed_generated_modules_match_a_fresh_build(tmp_path):
    fresh = build.generate(out_dir=tmp_path)
    committed = build.generated_files()
    assert [str(p) for p in fresh] == [str(p) for p in committed], (
        "the set of generated modules changed: run `python -m protos.build`")
    stale = [str(p) for p in committed
             if (build.REPO_ROOT / p).read_bytes() != (tmp_path / p).read_bytes()]
    assert not stale, f"stale generated modules {stale}: run `python -m protos.build`"


def test_every_proto_has_generated_modules():
    names = {p.stem for p in build.proto_files()}
    assert names == {"generate", "info", "tandem_service"}
    generated = {p.name for p in build.generated_files()}
    for name in names:
        assert {f"{name}_pb2.py", f"{name}_pb2.pyi", f"{name}_pb2_grpc.py"} <= generated


def test_generated_modules_import_as_the_protos_package():
    from protos.tandem.v1 import tandem_service_pb2, tandem_service_pb2_grpc
    service = tandem_service_pb2.DESCRIPTOR.services_by_name["Tandem"]
    assert service.full_name == "tandem.v1.Tandem"
    assert {m.name for m in service.methods} == {"Generate", "GetModelInfo", "GetClusterInfo"}
    assert service.methods_by_name["Generate"].server_streaming
    assert hasattr(tandem_service_pb2_grpc, "TandemStub")


def test_build_cli_writes_into_the_given_directory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "protos.build", "--out", str(tmp_path)],
                          cwd=build.REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "protos/tandem/v1/tandem_service_pb2_grpc.py").exists()
    assert "protos/tandem/v1/generate_pb2.py" in proc.stdout
