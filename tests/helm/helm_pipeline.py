"""Offline chart pipeline: lint strictly, check values against the schema, render with the
real Helm engine, and validate every rendered object.

Core kinds are validated against the strict Kubernetes schemas of pinned versions
(kubernetes-validate); custom kinds against vendored CRD schemas with unknown fields
rejected (a structural schema would prune them silently on the API server). Any problem
raises ChartPipelineError; nothing is skipped.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

# Value sets under tests/helm/fixtures/values/: the four the issue names, inline TLS, and
# mutual TLS with the HTTP API and tenant keys.
VALUE_SETS = ("cpu-default", "gpu-external-redis", "tls-auth", "autoscaling-monitoring", "tls-inline",
              "mtls-http", "ha-three-routers")

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "tandem"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CRDS = FIXTURES / "crds"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
RAYCLUSTER_CRD = CRDS / "ray.io_rayclusters.v1.7.0.yaml"
SERVICEMONITOR_CRD = CRDS / "monitoring.coreos.com_servicemonitors.v0.93.0.yaml"
CUSTOM_KINDS = {("ray.io/v1", "RayCluster"): RAYCLUSTER_CRD,
                ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICEMONITOR_CRD}
RELEASE, NAMESPACE = "demo", "llm"


class ChartPipelineError(Exception):
    """The chart failed a pipeline stage; the message names the stage and the object."""


@dataclass(slots=True)
class Rendered:
    """Every object a release renders, plus its NOTES.txt."""
    objects: list[dict[str, Any]]
    notes: str
    sources: dict[str, str] = field(default_factory=dict)   # template path -> rendered text

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"].endswith(name_suffix)]
        if len(found) != 1:
            raise ChartPipelineError(f"expected one {kind} named *{name_suffix}, found {len(found)}")
        return found[0]


def load_values(name: str) -> dict[str, Any]:
    """A values fixture, tests/helm/fixtures/values/<name>.yaml."""
    return yaml.safe_load((FIXTURES / "values" / f"{name}.yaml").read_text()) or {}


def lint(chart_dir: Path, values: dict[str, Any]) -> None:
    """`helm lint --strict` for every pinned Kubernetes version; info messages are allowed."""
    for version in KUBE_VERSIONS:
        report = helm.lint(str(chart_dir), values, strict=True, kube_version=f"v{version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + \
            [{"path": "", "error": e} for e in report["errors"]]
        if problems:
            shown = "; ".join(f"{m['path']}: {m['error']}" for m in problems)
            raise ChartPipelineError(f"lint (Kubernetes {version}): {shown}")


def render(chart_dir: Path, values: dict[str, Any]) -> Rendered:
    """Schema-check the values and render the chart offline with Helm's engine."""
    try:
        with helm.Chart.load(str(chart_dir)) as chart:
            chart.validate_schema(values)
            sources = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as exc:
        raise ChartPipelineError(f"render: {exc}") from exc
    objects, notes = [], ""
    for path, text in sorted(sources.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise ChartPipelineError(f"render: {path} is not YAML: {exc}") from exc
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise ChartPipelineError(f"render: {path} holds a document that is no object: {doc!r:.200}")
            objects.append(doc)
    return Rendered(objects, notes, sources)


def strict_schema(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which every object with known properties rejects
    unknown ones (unless it is marked x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(crd_path: Path, version: str) -> jsonschema.Draft7Validator:
    # The KubeRay CRD is ~1 MB of YAML: the C loader reads it in a fraction of the time.
    crd = yaml.load(crd_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = strict_schema(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
            return jsonschema.Draft7Validator(schema)
    raise ChartPipelineError(f"{crd_path.name} has no version {version}")


def _describe(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_object(obj: dict[str, Any]) -> None:
    """Validate one rendered object; raise ChartPipelineError naming the object and the field."""
    key = (obj["apiVersion"], obj["kind"])
    if key in CUSTOM_KINDS:
        validator = crd_validator(CUSTOM_KINDS[key], obj["apiVersion"].split("/")[1])
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            shown = "; ".join(f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                              for e in errors[:5])
            raise ChartPipelineError(f"validate {_describe(obj)} against {CUSTOM_KINDS[key].name}: {shown}")
        _validate_metadata(obj)
        if obj["kind"] == "RayCluster":
            for template in ray_pod_templates(obj):
                _validate_core({"apiVersion": "v1", "kind": "PodTemplate",
                                "metadata": {"name": _describe(obj).replace("/", "-").lower()},
                                "template": template})
        return
    _validate_core(obj)


def _validate_metadata(obj: dict[str, Any]) -> None:
    # A CRD leaves metadata open; a ConfigMap wrapper checks it against ObjectMeta.
    try:
        _validate_core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]})
    except ChartPipelineError as exc:
        raise ChartPipelineError(f"validate {_describe(obj)} metadata: {exc}") from exc


def _validate_core(obj: dict[str, Any]) -> None:
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise ChartPipelineError(f"validate {_describe(obj)}: no schema for {obj['apiVersion']} "
                                     f"{obj['kind']} in Kubernetes {version}") from exc
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path)) or "(root)"
            raise ChartPipelineError(f"validate {_describe(obj)} (Kubernetes {version}): "
                                     f"{where}: {exc.message}") from exc


def ray_pod_templates(raycluster: dict[str, Any]) -> list[dict[str, Any]]:
    spec = raycluster["spec"]
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec.get("workerGroupSpecs", [])]


def run(chart_dir: Path, values: dict[str, Any]) -> Rendered:
    """The whole pipeline: lint, schema, render, validate every object."""
    lint(chart_dir, values)
    rendered = render(chart_dir, values)
    if not rendered.objects:
        raise ChartPipelineError("render: the chart rendered no objects")
    for obj in rendered.objects:
        validate_object(obj)
    return rendered
