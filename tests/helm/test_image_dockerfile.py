"""The image: the Dockerfile passes hadolint and has the essentials (multi-stage, non-root,
pinned base and torch, no remote ADD); the .dockerignore context builds a wheel holding
every package and the default model; every runtime import is a declared dependency.
No Docker engine here: the build itself is not run."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import yaml

import helm_pipeline as hp

REPO = hp.REPO
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Imported by shipped code but not at run time: protos/build.py generates stubs at build
# time; loadtest draws plots only when matplotlib happens to be installed.
NOT_RUNTIME = {"grpc_tools", "matplotlib"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def makefile_pin(name: str) -> str:
    match = re.search(rf"^{name}\s*:=\s*(\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, f"{name} not in the Makefile"
    return match.group(1)


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_and_pinned():
    steps = instructions()
    args = dict(a.split("=", 1) if "=" in a else (a, None) for i, a in steps if i == "ARG")
    froms = [a for i, a in steps if i == "FROM"]
    assert len(froms) >= 2 and all(re.search(r"\sAS\s+\w+$", f, re.I) for f in froms)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", args["PYTHON_IMAGE"])
    final = steps[max(n for n, (i, _) in enumerate(steps) if i == "FROM"):]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(i == "COPY" and a.startswith("--from=build") for i, a in final), "the runtime copies the build"
    assert not [a for i, a in steps if i == "ADD"], "COPY, never ADD (no remote or auto-extracted sources)"
    assert "://" not in DOCKERFILE.read_text(), "no registry or index host is named"


def test_torch_is_pinned_like_the_makefile_and_installed_first():
    steps = instructions()
    args = dict(a.split("=", 1) if "=" in a else (a, None) for i, a in steps if i == "ARG")
    assert f"torch=={args['TORCH_VERSION']}" == makefile_pin("TORCH_PIN")
    assert f"lmcache=={args['LMCACHE_VERSION']}" == makefile_pin("LMCACHE_PIN")
    assert args["TORCH_INDEX_URL"] is None, "the index is a build argument with no default host"
    runs = [(n, a) for n, (i, a) in enumerate(steps) if i == "RUN"]
    torch_step = next(n for n, a in runs if '"torch==${TORCH_VERSION}"' in a)
    project_step = next(n for n, a in runs if re.search(r"pip install (--no-cache-dir )?\.(\s|$)", a))
    assert torch_step < project_step
    assert "--no-deps \"lmcache==${LMCACHE_VERSION}\"" in " ".join(a for _, a in runs)


def test_image_ray_is_the_version_the_chart_declares():
    steps = instructions()
    args = dict(a.split("=", 1) if "=" in a else (a, None) for i, a in steps if i == "ARG")
    chart_ray = yaml.safe_load((hp.CHART_DIR / "values.yaml").read_text())["ray"]["version"]
    assert args["RAY_VERSION"] == chart_ray
    assert any('"ray[default]==${RAY_VERSION}"' in a for i, a in steps if i == "RUN")


def context_paths() -> list[str]:
    """What the allowlist .dockerignore lets into the build context."""
    lines = [l.strip() for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", ".dockerignore is an allowlist: it starts by excluding everything"
    return [l[1:].rstrip("/") for l in lines if l.startswith("!")]


def test_context_holds_every_package_and_builds_a_wheel_with_the_default_model(tmp_path):
    allowed = context_paths()
    packages = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    missing = [p for p in packages if (REPO / p).is_dir() and p not in allowed]
    assert not missing, f"packages left out of the image's build context: {missing}"
    context = tmp_path / "context"
    for rel in allowed:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, context / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        elif src.is_file():
            context.mkdir(exist_ok=True)
            shutil.copy2(src, context / rel)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(context)], check=True, capture_output=True, timeout=120)
    names = zipfile.ZipFile(next(wheels.glob("*.whl"))).namelist()
    model = REPO / "engine" / "models" / "stories260K"
    for f in model.iterdir():
        assert f"engine/models/stories260K/{f.name}" in names
    assert {p for p in packages if (REPO / p).is_dir()} <= {n.split("/")[0] for n in names}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0])


def _declared_closure() -> set[str]:
    """Distributions the image installs: pyproject dependencies, the LMCache CPU list and
    lmcache, with everything they require."""
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    lmcache_reqs = (REPO / "requirements" / "lmcache-cpu.txt").read_text().splitlines()
    declared |= {_requirement_name(l) for l in lmcache_reqs if l.strip() and not l.startswith("#")}
    declared.add("lmcache")
    closure, todo = set(), list(declared)
    while todo:
        dist = todo.pop()
        if dist in closure:
            continue
        closure.add(dist)
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_requirement_name(r) for r in requires
                 if "extra ==" not in r or (dist == "ray" and 'extra == "default"' in r)]
    return closure


def test_image_installs_every_runtime_import():
    packages = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    imported: dict[str, str] = {}
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")) if (REPO / package).is_dir() else []:
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for name in names:
                    imported.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    third_party = {m: where for m, where in imported.items()
                   if m not in sys.stdlib_module_names and m not in packages and m not in NOT_RUNTIME}
    closure = _declared_closure()
    providers = metadata.packages_distributions()
    missing = {m: where for m, where in third_party.items()
               if not any(_norm(d) in closure for d in providers.get(m, []))}
    assert not missing, f"imported but not installed by `pip install .` (add to pyproject dependencies): {missing}"
