"""A deliberately broken copy of the chart fails the pipeline, at the stage that should catch it."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import helm_pipeline as hp


@pytest.fixture
def chart_copy(tmp_path) -> Path:
    target = tmp_path / "tandem"
    shutil.copytree(hp.CHART_DIR, target)
    return target


def break_template(chart: Path, template: str, old: str, new: str) -> None:
    path = chart / "templates" / template
    text = path.read_text()
    if old not in text:
        raise ValueError(f"{old!r} not in {template}: the breakage no longer applies")
    path.write_text(text.replace(old, new, 1))


def test_an_untouched_copy_passes(chart_copy):
    assert hp.run(chart_copy, {}).of_kind("RayCluster")


@pytest.mark.parametrize("template, old, new, stage", [
    # A template that does not parse.
    ("router-service.yaml", "{{ .Values.router.service.type }}", "{{ .Values.router.service.type ", "lint"),
    # A nil dereference at render time.
    ("router-deployment.yaml", "{{ .Values.router.replicas }}", "{{ .Values.router.nosuch.replicas }}", "lint"),
    # An unknown field in a core object.
    ("router-deployment.yaml", "  strategy:\n", "  replicaz: 2\n  strategy:\n", "validate Deployment"),
    # A wrong type in a core object.
    ("router-service.yaml", "port: {{ .Values.router.grpc.port }}",
     "port: {{ .Values.router.grpc.port | quote }}", "validate Service"),
    # A misspelt RayCluster field: the CRD's structural schema would prune it silently.
    ("raycluster.yaml", "    - groupName: {{ $pool }}", "    - groupNmae: {{ $pool }}", "validate RayCluster"),
    # An unknown field inside a RayCluster's pod template.
    ("raycluster.yaml", "            - name: ray-worker\n",
     "            - name: ray-worker\n              imagePolicy: Always\n", "validate RayCluster"),
    # An unknown field in the ServiceMonitor.
    ("servicemonitor.yaml", "      path: /metrics", "      paht: /metrics", "validate ServiceMonitor"),
    # An unknown field in a RayCluster's metadata (a CRD leaves metadata open).
    ("raycluster.yaml", "  namespace: {{ .Release.Namespace }}\n",
     "  namespace: {{ .Release.Namespace }}\n  annotationz: {}\n", "validate RayCluster/demo-tandem metadata"),
])
def test_a_broken_template_fails_the_pipeline(chart_copy, template, old, new, stage):
    break_template(chart_copy, template, old, new)
    values = hp.load_values("autoscaling-monitoring") if "ServiceMonitor" in stage else {}
    with pytest.raises(hp.ChartPipelineError, match=re.escape(stage)):
        hp.run(chart_copy, values)


def test_a_broken_values_schema_file_fails_the_pipeline(chart_copy):
    (chart_copy / "values.schema.json").write_text('{"type": "object", "properties": ')
    with pytest.raises(hp.ChartPipelineError):
        hp.run(chart_copy, {})


def test_a_default_that_breaks_the_schema_fails_lint(chart_copy):
    values = chart_copy / "values.yaml"
    values.write_text(values.read_text().replace("accelerator: cpu", "accelerator: gpu", 1))
    with pytest.raises(hp.ChartPipelineError, match="lint"):
        hp.run(chart_copy, {})
