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
# Config fields (or whole sections) the chart fills in from other values
# (templates/_helpers.tpl tandem.clusterConfig): ports from `router`, TLS files from `tls`,
# auth switch and keys file from `auth`.
# store.private_maxmemory, store.private_policy: the chart always renders store.url, so no
# private server starts.
DERIVED = {"pools", "model.device", "store.url", "store.private_maxmemory", "store.private_policy", "router.host",
           "router.grpc_port",
           "router.metrics_port", "router.http_port", "router.auth.enabled",
           "router.auth.keys_file", "router.tls", "ray.address", "ray.include_dashboard", "ray.keep_pools",
           "ray.pools_generation",
           "router.limits.shared_url", "router.admission.worker_queues"}
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
    ({"config": {"router": {"http_port": 1}}}, "additional properties 'http_port'"),   # derived
    ({"config": {"router": {"metrics_port": 1}}}, "additional properties 'metrics_port'"),
    ({"config": {"router": {"tls": {"cert": "/c"}}}}, "additional properties 'tls'"),   # from `tls`
    ({"config": {"router": {"auth": {"keys_file": "/k"}}}}, "additional properties 'keys_file'"),
    ({"config": {"router": {"auth": {"enabled": True}}}}, "additional properties 'enabled'"),
    ({"config": {"router": {"auth": {"keys_env": "1BAD"}}}}, "keys_env"),
    ({"config": {"router": {"limits": {"max_body_bytes": 100}}}}, "minimum"),
    ({"config": {"router": {"limits": {"tenant_rps": 0}}}}, "tenant_rps"),
    ({"config": {"router": {"limits": {"max_tokens": "many"}}}}, "max_tokens"),
    ({"config": {"router": {"limits": {"tenant_brust": 3}}}}, "additional properties 'tenant_brust'"),
    ({"config": {"router": {"admission": {"enabled": "yes"}}}}, "want boolean"),
    ({"config": {"router": {"admission": {"miss_margin": -1}}}}, "minimum"),
    ({"config": {"router": {"admission": {"max_queue": 0}}}}, "minimum"),
    ({"tls": {"clientAuth": {"enabled": True, "ca": "x"}}}, "additional properties 'ca'"),
    ({"tls": {"clientAuth": {"enabled": 1}}}, "want boolean"),
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
    ({"auth": {"apiKeys": ["alpha:tk-alpha-0123456789abcdef rps=fast"]}}, "apiKeys"),
    ({"auth": {"apiKeys": ["al pha:tk-alpha-0123456789abcdef"]}}, "apiKeys"),
    ({"router": {"strategy": {"type": "Rolling"}}}, "strategy"),
    ({"ray": {"autoscaling": {"enabled": True, "upscalingMode": "Fast"}}}, "upscalingMode"),
    ({"pools": {"decode": {"minReplicas": -1}}}, "minimum"),
])
def test_schema_rejects_unknown_keys_and_wrong_types(values, message):
    with pytest.raises(hp.ChartPipelineError, match=re.escape(message)):
        hp.render(hp.CHART_DIR, values)


@pytest.mark.parametrize("values, message", [
    ({"serviceMonitor": {"enabled": True}}, "needs router.metrics.enabled"),
    ({"tls": {"enabled": True}}, "tls.enabled needs tls.existingSecret"),
    ({"router": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 2}}}, "must be <= maxReplicas"),
    ({"ray": {"autoscaling": {"enabled": True}}, "pools": {"decode": {"replicas": 2, "maxReplicas": 1}}},
     "pools.decode: need minReplicas (0) <= replicas (2) <= maxReplicas (1)"),
    ({"ray": {"autoscaling": {"enabled": True}}, "pools": {"prefill": {"minReplicas": 2}}},
     "pools.prefill: need minReplicas (2) <= replicas (1) <= maxReplicas (4)"),
    ({"tls": {"clientAuth": {"enabled": True, "existingSecret": "c"}}}, "tls.clientAuth.enabled needs tls.enabled"),
    ({"tls": {"enabled": True, "existingSecret": "s", "clientAuth": {"enabled": True}}},
     "tls.clientAuth.enabled needs tls.clientAuth.existingSecret"),
    ({"tls": {"enabled": True, "cert": "c", "key": "k", "clientAuth": {"enabled": True, "existingSecret": "c"}}},
     "tls.clientAuth.enabled needs tls.ca"),
])
def test_inconsistent_switches_fail_with_a_clear_message(values, message):
    with pytest.raises(hp.ChartPipelineError, match=re.escape(message)):
        hp.render(hp.CHART_DIR, values)


def _config_drift(tp, schema, path, problems):
    """Compare dataclass ``tp`` with the object schema at ``path``, recursing into sections."""
    import typing

    hints = typing.get_type_hints(tp)
    keys = set(schema.get("properties", {}))
    problems += [f"{_join(path, k)}: not a config field" for k in sorted(keys - set(hints))]
    for name, field_type in hints.items():
        where = _join(path, name)
        if where in DERIVED:
            continue
        if name not in keys:
            problems.append(f"{where}: neither in the schema nor derived by the chart")
        elif dataclasses.is_dataclass(field_type):
            _config_drift(field_type, schema["properties"][name], where, problems)


def _join(path, key):
    return f"{path}.{key}" if path else key


def test_config_section_matches_cluster_config():
    """Every schema key is a ClusterConfig field, and every field, at any depth, is settable
    or derived: a field added to cluster/config.py fails here until the chart renders it."""
    problems: list[str] = []
    _config_drift(ClusterConfig, SCHEMA["properties"]["config"], "", problems)
    assert not problems, "; ".join(problems)


def _leaves(tree, path=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, _join(path, key))
        else:
            yield _join(path, key), value


def test_config_defaults_in_values_equal_the_loader_defaults():
    defaults = dict(_leaves(ClusterConfig().to_dict()))
    values = yaml.safe_load(VALUES.read_text())["config"]
    differ = [k for k, v in _leaves(values) if k not in defaults or defaults[k] != v]
    assert not differ, f"values.yaml config differs from cluster/config.py defaults at {differ}"
