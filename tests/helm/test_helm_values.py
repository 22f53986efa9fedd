"""values.yaml and values.schema.json: every key documented, unknown keys and wrong types
rejected, inconsistent switches refused, and the config section kept in step with
cluster/config.py."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import yaml

import helm_pipeline as hp
from cluster.config import ClusterConfig, load_config

VALUES = hp.CHART_DIR / "values.yaml"
SCHEMA = json.loads((hp.CHART_DIR / "values.schema.json").read_text())
# Config fields the chart fills in from other values (templates/_helpers.tpl tandem.clusterConfig).
DERIVED = {"pools", "model.device", "store.url", "router.host", "router.grpc_port",
           "router.metrics_port", "ray.address", "ray.include_dashboard"}
# Schemas that are free-form maps on purpose (Kubernetes objects, label and parameter maps).
FREE_FORM = {"stringMap", "resourceList", "rayStartParams", "poolRayStartParams", "tolerations",
             "affinity", "envList"}
KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_.\-]+):(\s|$)")


def test_every_values_key_has_a_comment():
    lines = VALUES.read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match or "#" in line.split(":", 1)[1]:
            continue
        previous = next((p for p in reversed(lines[:i]) if p.strip()), "")
        if not (previous.strip().startswith("#")
                and len(previous) - len(previous.lstrip()) == len(match.group(1))):
            undocumented.append(f"line {i + 1}: {line.strip()}")
    assert not undocumented, "keys without a comment above them: " + "; ".join(undocumented)


def test_documented_optional_keys_pass_the_schema_and_the_loader(tmp_path):
    # Lines like "# dtype: bfloat16" right after "# -- Optional: ..." are ready to uncomment.
    lines = VALUES.read_text().splitlines()
    uncommented = [re.sub(r"^(\s*)# ", r"\1", line) if i and "-- Optional:" in lines[i - 1] else line
                   for i, line in enumerate(lines)]
    assert sum(a != b for a, b in zip(lines, uncommented)) >= 5
    values = yaml.safe_load("\n".join(uncommented))
    rendered = hp.render(hp.CHART_DIR, values)
    path = tmp_path / "config.yaml"
    path.write_text(rendered.one("ConfigMap", "-config")["data"]["config.yaml"])
    cfg = load_config(path)
    assert (cfg.model.dtype, cfg.model.max_model_len, cfg.kv_transfer.entropy) == ("bfloat16", 4096, "zstd")


def _object_schemas(schema, path="$"):
    if isinstance(schema, dict):
        if "properties" in schema:
            yield path, schema
        for key, sub in schema.items():
            # definitions are walked by name; if/then/not only constrain, they add no keys
            if key not in ("definitions", "if", "then", "else", "not"):
                yield from _object_schemas(sub, f"{path}.{key}")
    elif isinstance(schema, list):
        for i, sub in enumerate(schema):
            yield from _object_schemas(sub, f"{path}[{i}]")


def test_schema_closes_every_object_with_known_keys():
    schemas = list(_object_schemas(SCHEMA))
    for name, sub in SCHEMA["definitions"].items():
        schemas += list(_object_schemas(sub, f"definitions.{name}"))
    open_ones = [p for p, s in schemas if s.get("additionalProperties") is not False and
                 p.split(".")[1] not in FREE_FORM]
    assert len(schemas) > 20 and not open_ones


@pytest.mark.parametrize("values, message", [
    ({"bogus": 1}, "additional properties 'bogus'"),
    ({"pools": {"decode": {"replicaz": 2}}}, "additional properties 'replicaz'"),
    ({"config": {"model": {"modle": "x"}}}, "additional properties 'modle'"),
    ({"config": {"router": {"grpc_port": 1}}}, "additional properties 'grpc_port'"),   # derived
    ({"router": {"metrics": {"enabled": True, "path": "/m"}}}, "additional properties 'path'"),
    ({"pools": {"prefill": {"replicas": "two"}}}, "want integer"),
    ({"pools": {"prefill": {"replicas": 0}}}, "minimum"),
    ({"accelerator": "tpu"}, "accelerator"),
    ({"config": {"model": {"block_size": 1.5}}}, "want integer"),
    ({"config": {"mode": "split"}}, "mode"),
    ({"router": {"grpc": {"port": 70000}}}, "maximum"),
    ({"tls": {"enabled": "yes"}}, "want boolean"),
    ({"config": {"store": {"key_prefix": "a b"}}}, "key_prefix"),
    ({"pools": {"decode": {"rayStartParams": {"resources": "{}"}}}}, "resources"),
    ({"redis": {"mode": "external"}}, "url"),
    ({"redis": {"mode": "external", "external": {"url": "http://redis:6379"}}}, "url"),
    ({"auth": {"apiKeys": ["short"]}}, "apiKeys"),
])
def test_schema_rejects_unknown_keys_and_wrong_types(values, message):
    with pytest.raises(hp.ChartPipelineError, match=re.escape(message)):
        hp.render(hp.CHART_DIR, values)


@pytest.mark.parametrize("values, message", [
    ({"serviceMonitor": {"enabled": True}}, "needs router.metrics.enabled"),
    ({"tls": {"enabled": True}}, "tls.enabled needs tls.existingSecret"),
    ({"router": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 2}}}, "must be <= maxReplicas"),
])
def test_inconsistent_switches_fail_with_a_clear_message(values, message):
    with pytest.raises(hp.ChartPipelineError, match=re.escape(message)):
        hp.render(hp.CHART_DIR, values)


def test_config_section_matches_cluster_config():
    """Every schema key is a ClusterConfig field, and every field is settable or derived:
    a field added to cluster/config.py fails here until the chart renders it."""
    import typing

    config_schema = SCHEMA["properties"]["config"]["properties"]
    hints = typing.get_type_hints(ClusterConfig)
    problems = []
    for section, field_type in hints.items():
        if section in DERIVED:
            continue
        if section not in config_schema:
            problems.append(f"{section}: not in values.schema.json config")
            continue
        if not dataclasses.is_dataclass(field_type):
            continue
        fields = {f.name for f in dataclasses.fields(field_type)}
        keys = set(config_schema[section]["properties"])
        problems += [f"{section}.{k}: not a config field" for k in sorted(keys - fields)]
        problems += [f"{section}.{k}: neither in the schema nor derived by the chart"
                     for k in sorted(fields - keys) if f"{section}.{k}" not in DERIVED]
    problems += [f"{k}: not a config section" for k in set(config_schema) - set(hints)]
    assert not problems, "; ".join(problems)


def test_config_defaults_in_values_equal_the_loader_defaults():
    defaults = ClusterConfig().to_dict()
    values = yaml.safe_load(VALUES.read_text())["config"]
    differ = [f"{s}.{k}" for s, section in values.items() if isinstance(section, dict)
              for k, v in section.items() if defaults[s][k] != v]
    assert not differ, f"values.yaml config differs from cluster/config.py defaults at {differ}"
