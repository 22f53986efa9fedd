"""The chart renders valid objects for every value set, and they say what the code expects:
the config loads with the project's loader, the worker groups advertise POOL_RESOURCES,
probes hit the gRPC health service, switches add and remove what they promise."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import helm_pipeline as hp
from cluster.config import ClusterConfig, load_config
from cluster.ray_runtime import POOL_RESOURCES, pool_sizes
from helm_pipeline import VALUE_SETS

KUBERAY_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/created-by")


def cluster_config(release: hp.Rendered, tmp_path: Path) -> ClusterConfig:
    text = release.one("ConfigMap", "-config")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


def ray_group_resources(group: dict) -> dict[str, float]:
    """The custom resources a KubeRay group advertises (`'{"name": n}'`, shell-quoted JSON)."""
    return json.loads(group["rayStartParams"]["resources"].strip("'"))


def router_container(release: hp.Rendered) -> dict:
    return release.one("Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_value_set_renders_objects_that_pass_validation(releases, name):
    kinds = {o["kind"] for o in releases[name].objects}
    assert {"RayCluster", "Deployment", "Service", "ConfigMap", "Pod"} <= kinds
    names = [(o["kind"], o["metadata"]["name"]) for o in releases[name].objects]
    assert len(names) == len(set(names)), "two objects share a kind and name"
    assert len(releases[name].one("RayCluster")["metadata"]["name"]) <= 53   # KubeRay's limit


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_config_loads_with_the_project_config_loader(releases, merged_values, name, tmp_path):
    cfg = cluster_config(releases[name], tmp_path)
    assert ClusterConfig.from_dict(cfg.to_dict()) == cfg
    values = merged_values[name]
    for pool in ("prefill", "decode"):
        p = values["pools"][pool]
        pc = getattr(cfg.pools, pool)
        assert pc.workers == p["replicas"] * p["workersPerPod"]
        assert pc.cpus_per_worker == p["cpusPerWorker"]
        assert pc.gpus_per_worker == (p["gpusPerWorker"] if values["accelerator"] == "nvidia" else 0)
        assert pc.max_restarts == p["maxRestarts"]
    assert cfg.model.device == ("cuda" if values["accelerator"] == "nvidia" else "cpu")
    assert cfg.router.host == "0.0.0.0"
    assert cfg.router.grpc_port == values["router"]["grpc"]["port"]
    assert cfg.router.metrics_port == (values["router"]["metrics"]["port"]
                                       if values["router"]["metrics"]["enabled"] else None)
    assert cfg.router.http_port == (values["router"]["http"]["port"]
                                    if values["router"]["http"]["enabled"] else None)
    # The router binds 0.0.0.0: auth must be on with a keys file, or off explicitly.
    assert cfg.router.auth.enabled is values["auth"]["enabled"]
    assert cfg.router.auth.keys_file == ("/etc/tandem/auth/api-keys" if values["auth"]["enabled"] else None)
    tls, mutual = values["tls"]["enabled"], values["tls"]["clientAuth"]["enabled"]
    assert (cfg.router.tls.cert, cfg.router.tls.key) == (
        ("/etc/tandem/tls/tls.crt", "/etc/tandem/tls/tls.key") if tls else (None, None))
    assert cfg.router.tls.client_ca == ("/etc/tandem/tls/ca.crt" if tls and mutual else None)
    user_router = values["config"]["router"]
    for section in ("limits", "admission"):
        for key, value in user_router.get(section, {}).items():
            assert getattr(getattr(cfg.router, section), key) == value, f"router.{section}.{key}"
    assert cfg.ray.address == "auto"
    assert cfg.mode == values["config"]["mode"]
    several = values["router"]["replicas"] > 1 or values["router"]["autoscaling"]["enabled"]
    # Several routers keep tenant limits in the cluster's Redis (the store's), one keeps its own.
    assert cfg.router.limits.shared_url == (cfg.store.url if several else None)
    assert cfg.store.url is not None and "@" not in cfg.store.url, "no password in the ConfigMap"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_worker_groups_advertise_the_pool_resources_the_actors_ask_for(releases, name, tmp_path):
    release = releases[name]
    cfg = cluster_config(release, tmp_path)
    spec = release.one("RayCluster")["spec"]
    advertised: dict[str, float] = {}
    for group in spec["workerGroupSpecs"]:
        for resource, amount in ray_group_resources(group).items():
            advertised[resource] = advertised.get(resource, 0) + amount * group["replicas"]
    # Exactly what the pools reserve: one unit of POOL_RESOURCES[role] per worker actor.
    needed: dict[str, float] = {}
    for role, workers in pool_sizes(cfg).items():
        needed[POOL_RESOURCES[role]] = needed.get(POOL_RESOURCES[role], 0) + workers
    assert advertised == needed
    groups = {g["groupName"] for g in spec["workerGroupSpecs"]}
    roles = set(pool_sizes(cfg))
    assert {POOL_RESOURCES[r] for r in roles} == {f"tandem_{g}" for g in groups}
    head = spec["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0" and "resources" not in head, "no pool actor may land on the head"


def test_each_pool_has_its_own_group_with_its_resource(releases):
    groups = {g["groupName"]: g for g in releases["cpu-default"].one("RayCluster")["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"prefill", "decode"}
    for pool, group in groups.items():
        assert ray_group_resources(group) == {POOL_RESOURCES[pool]: 1}
    colocated = releases["autoscaling-monitoring"].one("RayCluster")["spec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in colocated] == ["decode"]
    assert ray_group_resources(colocated[0]) == {POOL_RESOURCES["colocated"]: 1}


def test_gpu_groups_request_nvidia_gpus_and_cpu_groups_none(releases):
    gpu = {g["groupName"]: g for g in releases["gpu-external-redis"].one("RayCluster")["spec"]["workerGroupSpecs"]}
    prefill = gpu["prefill"]["template"]["spec"]
    assert prefill["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2   # 2 workers x 1 GPU
    assert gpu["prefill"]["rayStartParams"]["num-gpus"] == "2"
    assert gpu["prefill"]["rayStartParams"]["num-cpus"] == "8"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in prefill["tolerations"]
    assert prefill["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert "podAntiAffinity" in gpu["decode"]["template"]["spec"]["affinity"]
    for group in releases["cpu-default"].one("RayCluster")["spec"]["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in json.dumps(container["resources"])
        assert group["rayStartParams"]["num-gpus"] == "0"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_ray_pod_and_the_router_mount_dev_shm_in_memory(releases, name):
    release = releases[name]
    pods = hp.ray_pod_templates(release.one("RayCluster"))
    pods.append(release.one("Deployment", "-router")["spec"]["template"])
    for pod in pods:
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_ray_pods_leave_kuberay_selector_labels_alone(releases):
    for pod in hp.ray_pod_templates(releases["cpu-default"].one("RayCluster")):
        labels = pod["metadata"]["labels"]
        assert not [k for k in labels if k in KUBERAY_LABELS or k.startswith("ray.io/")]


def test_router_joins_the_kuberay_head_service_and_runs_the_launcher(releases):
    release = releases["cpu-default"]
    container = router_container(release)
    args = container["args"]
    head = args[args.index("--ray-head") + 1]
    assert head == f"{release.one('RayCluster')['metadata']['name']}-head-svc.{hp.NAMESPACE}.svc:6379"
    assert container["command"] == ["python", "/opt/tandem-k8s/tandem_k8s.py"] and args[0] == "serve"
    assert args[args.index("--config") + 1] == "/etc/tandem/config.yaml"
    scripts = release.one("ConfigMap", "-scripts")["data"]["tandem_k8s.py"]
    assert scripts == (hp.CHART_DIR / "files" / "tandem_k8s.py").read_text()
    strategy = release.one("Deployment", "-router")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, \
        "a new router pod is ready before an old one stops"
    assert "--no-wait-for-workers" not in args, "without the autoscaler the groups' pods come first"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_no_router_stops_the_pools_and_several_share_tenant_limits(releases, name, tmp_path):
    cfg = cluster_config(releases[name], tmp_path)
    assert cfg.ray.keep_pools, "router pods come and go; the pools live as long as the RayCluster"
    assert cfg.ray.pools_generation == 1, "the release revision: an upgrade's routers replace the old pools"
    assert cfg.router.limits.shared_url == cfg.store.url, "two or more routers: limits held in Redis"
    assert cfg.router.admission.worker_queues, "two or more routers: admission counts every router's queue"


def test_a_headless_service_lists_every_router_pod_for_the_sdk(releases):
    release = releases["cpu-default"]
    headless = release.one("Service", "-router-headless")
    assert headless["spec"]["clusterIP"] == "None"
    router_labels = release.one("Deployment", "-router")["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= router_labels.items()
    assert [p["targetPort"] for p in headless["spec"]["ports"]] == ["grpc"]
    assert f"dns:///{headless['metadata']['name']}.{hp.NAMESPACE}.svc:" in release.notes


def test_the_ray_autoscaler_scales_each_pool_group_within_its_bounds(releases):
    fixed = releases["cpu-default"].one("RayCluster")["spec"]
    assert fixed["enableInTreeAutoscaling"] is False
    assert all(g["minReplicas"] == g["replicas"] == g["maxReplicas"] for g in fixed["workerGroupSpecs"])
    scaled = releases["autoscaling-monitoring"]
    spec = scaled.one("RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"] == {"idleTimeoutSeconds": 60, "upscalingMode": "Default"}
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert (groups["decode"]["minReplicas"], groups["decode"]["replicas"], groups["decode"]["maxReplicas"]) == (0, 2, 4)
    assert ray_group_resources(groups["decode"]) == {POOL_RESOURCES["decode"]: 1}, "scaled on its own resource"
    assert "--no-wait-for-workers" in router_container(scaled)["args"]
    three = releases["ha-three-routers"]
    assert three.one("Deployment", "-router")["spec"]["replicas"] == 3
    groups = {g["groupName"]: g for g in three.one("RayCluster")["spec"]["workerGroupSpecs"]}
    assert [(g["minReplicas"], g["replicas"], g["maxReplicas"]) for g in groups.values()] == [(1, 2, 6), (1, 2, 8)]


def test_rebalancing_set_in_the_values_reaches_every_routers_config(releases, tmp_path):
    cfg = cluster_config(releases["ha-three-routers"], tmp_path)
    assert cfg.rebalance.enabled and cfg.rebalance.min_dwell_s == 60
    default = tmp_path / "default"
    default.mkdir()
    assert not cluster_config(releases["cpu-default"], default).rebalance.enabled


@pytest.mark.parametrize("name", VALUE_SETS)
def test_files_the_config_names_are_where_the_router_mounts_its_secrets(releases, name, tmp_path):
    release = releases[name]
    cfg = cluster_config(release, tmp_path)
    pod = release.one("Deployment", "-router")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in pod["containers"][0]["volumeMounts"]}
    named = [cfg.router.tls.cert, cfg.router.tls.key, cfg.router.tls.client_ca, cfg.router.auth.keys_file]
    secret_keys = {"tls.crt", "tls.key", "ca.crt"}   # a kubernetes.io/tls Secret, mounted whole
    for path in filter(None, named):
        directory, _, file = path.rpartition("/")
        secret = mounts[directory]["secret"]
        files = {i["path"] for i in secret["items"]} if "items" in secret else secret_keys
        assert file in files, f"{path} is not in the Secret mounted at {directory}"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_service_and_container_ports_are_the_ports_in_the_config(releases, name, tmp_path):
    cfg = cluster_config(releases[name], tmp_path)
    expected = {"grpc": cfg.router.grpc_port, "http": cfg.router.http_port, "metrics": cfg.router.metrics_port}
    expected = {k: v for k, v in expected.items() if v is not None}
    service = {p["name"]: p for p in releases[name].one("Service", "-router")["spec"]["ports"]}
    container = {p["name"]: p["containerPort"] for p in router_container(releases[name])["ports"]}
    assert {k: p["port"] for k, p in service.items()} == expected == container
    assert all(p["targetPort"] == k for k, p in service.items())
    # h2c is cleartext HTTP/2: with TLS a proxy honouring it would break the connection.
    assert ("appProtocol" in service["grpc"]) is (cfg.router.tls.cert is None)


@pytest.mark.parametrize("name, scheme", [("autoscaling-monitoring", "HTTP"), ("tls-inline", "HTTPS")])
def test_router_probes_get_http_health_when_http_is_on(releases, name, scheme):
    container = router_container(releases[name])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[kind]["httpGet"] == {"path": "/health", "port": "http", "scheme": scheme}
        assert "grpc" not in container[kind] and "exec" not in container[kind]


def test_mutual_tls_probes_present_the_probe_client_certificate(releases):
    release = releases["mtls-http"]
    container = router_container(release)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[kind]["exec"]["command"]   # kubelet's httpGet has no client certificate
        assert command[command.index("--tls-cert") + 1] == "/etc/tandem/tls-client/tls.crt"
        assert command[command.index("--tls-key") + 1] == "/etc/tandem/tls-client/tls.key"
    pod = release.one("Deployment", "-router")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/etc/tandem/tls-client"]]["secret"]["secretName"] == "tandem-probe-client-cert"
    test_pod = release.one("Pod", "-test-generate")["spec"]
    args = test_pod["containers"][0]["args"]
    assert args[args.index("--tls-cert") + 1] == "/etc/tandem/tls-client/tls.crt"
    test_mounts = {m["mountPath"]: m["name"] for m in test_pod["containers"][0]["volumeMounts"]}
    test_volumes = {v["name"]: v for v in test_pod["volumes"]}
    assert test_volumes[test_mounts["/etc/tandem/tls-client"]]["secret"]["secretName"] == "tandem-probe-client-cert"
    for name in ("cpu-default", "tls-auth", "tls-inline"):
        assert "--tls-cert" not in json.dumps(router_container(releases[name]))


def test_servicemonitor_scrapes_https_with_the_router_ca_when_tls_is_on(releases):
    plain = releases["autoscaling-monitoring"].one("ServiceMonitor")["spec"]["endpoints"][0]
    assert "scheme" not in plain and "tlsConfig" not in plain
    endpoint = releases["mtls-http"].one("ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    tls = endpoint["tlsConfig"]
    assert tls["serverName"] == "tandem.example.internal"
    assert (tls["ca"]["secret"]["name"], tls["ca"]["secret"]["key"]) == ("tandem-router-cert", "ca.crt")
    assert tls["cert"]["secret"] == {"name": "tandem-probe-client-cert", "key": "tls.crt"}
    assert tls["keySecret"] == {"name": "tandem-probe-client-cert", "key": "tls.key"}


def test_router_probes_are_grpc_health_checks(releases):
    container = router_container(releases["cpu-default"])
    port = container["ports"][0]["containerPort"]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[kind]["grpc"]["port"] == port
    assert container["readinessProbe"]["grpc"]["service"] == "tandem.v1.Tandem"


def test_tls_probes_run_the_health_check_with_tls(releases):
    container = router_container(releases["tls-auth"])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[kind]["exec"]["command"]
        assert command[:3] == ["python", "/opt/tandem-k8s/tandem_k8s.py", "health"]
        assert command[command.index("--tls-ca") + 1] == "/etc/tandem/tls/ca.crt"
        assert command[command.index("--server-name") + 1] == "tandem.example.internal"


def test_service_ports_follow_the_http_and_metrics_switches(releases):
    def ports(name):
        return {p["name"]: p["port"] for p in releases[name].one("Service", "-router")["spec"]["ports"]}
    assert ports("cpu-default") == {"grpc": 50051}
    assert ports("autoscaling-monitoring") == {"grpc": 50051, "http": 8080, "metrics": 9400}
    assert releases["tls-auth"].one("Service", "-router")["spec"]["type"] == "LoadBalancer"


def test_hpa_and_servicemonitor_only_when_enabled(releases):
    default = releases["cpu-default"]
    assert not default.of_kind("HorizontalPodAutoscaler") and not default.of_kind("ServiceMonitor")
    assert default.one("Deployment", "-router")["spec"]["replicas"] == 2
    scaled = releases["autoscaling-monitoring"]
    hpa = scaled.one("HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["scaleTargetRef"]["name"] == scaled.one("Deployment", "-router")["metadata"]["name"]
    assert "replicas" not in scaled.one("Deployment", "-router")["spec"], "the HPA owns the replica count"
    monitor = scaled.one("ServiceMonitor")
    service = scaled.one("Service", "-router")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()


def test_pdb_selects_exactly_the_router_pods(releases):
    release = releases["cpu-default"]
    pdb = release.one("PodDisruptionBudget")
    router_labels = release.one("Deployment", "-router")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= router_labels.items()
    redis_labels = release.one("StatefulSet", "-redis")["spec"]["template"]["metadata"]["labels"]
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= redis_labels.items()


def test_builtin_redis_has_maxmemory_lru_and_auth_from_its_secret(releases):
    release = releases["cpu-default"]
    redis = release.one("StatefulSet", "-redis")["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(redis["args"])
    assert "--maxmemory 1gb" in command and "--maxmemory-policy allkeys-lru" in command
    assert '--requirepass "$REDIS_PASSWORD"' in command
    secret = release.one("Secret", "-redis")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]}
    assert env["REDIS_PASSWORD"] == {"name": secret["metadata"]["name"], "key": "redis-password"}
    router_env = {e["name"]: e.get("valueFrom") for e in router_container(release)["env"]}
    assert router_env["REDIS_PASSWORD"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def test_external_redis_uses_its_url_and_existing_secret_and_no_builtin(releases, tmp_path):
    release = releases["gpu-external-redis"]
    assert not release.of_kind("StatefulSet") and not release.of_kind("Secret")
    assert cluster_config(release, tmp_path).store.url == "rediss://redis.cache.svc:6380/2"
    env = {e["name"]: e.get("valueFrom") for e in router_container(release)["env"]}
    assert env["REDIS_PASSWORD"]["secretKeyRef"] == {"name": "llm-redis", "key": "password"}


@pytest.mark.parametrize("name", ["tls-auth", "tls-inline"])
def test_tls_and_api_keys_are_mounted_at_the_documented_paths(releases, name):
    release = releases[name]
    pod = release.one("Deployment", "-router")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    tls_secret = volumes[mounts["/etc/tandem/tls"]]["secret"]["secretName"]
    keys_volume = volumes[mounts["/etc/tandem/auth"]]["secret"]
    assert keys_volume["items"] == [{"key": "api-keys", "path": "api-keys"}]
    created = {s["metadata"]["name"]: s for s in release.of_kind("Secret")}
    if name == "tls-auth":
        assert tls_secret == "tandem-router-cert" and tls_secret not in created
    else:
        assert created[tls_secret]["type"] == "kubernetes.io/tls"
        assert set(created[tls_secret]["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert keys_volume["secretName"] in created, "no existing Secret named: the chart creates one"
    test_args = release.one("Pod", "-test-generate")["spec"]["containers"][0]["args"]
    assert "--tls-ca" in test_args and test_args[test_args.index("--api-key-file") + 1] == "/etc/tandem/auth/api-keys"


def test_helm_test_pod_checks_health_then_generates_through_the_sdk(releases):
    pod = releases["cpu-default"].one("Pod", "-test-generate")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "/opt/tandem-k8s/tandem_k8s.py"]
    args = container["args"]
    assert args[0] == "generate"
    assert args[args.index("--target") + 1] == f"demo-tandem-router.{hp.NAMESPACE}.svc:50051"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_notes_say_how_to_reach_the_service(releases):
    notes = releases["cpu-default"].notes
    assert "port-forward svc/demo-tandem-router 50051:50051" in notes
    assert "tandem generate --target" in notes and "helm test demo" in notes
    assert "WARNING" not in notes
    assert "loadBalancer.ingress" in releases["tls-auth"].notes
    assert "Several router pods serve from one set of pools" in releases["autoscaling-monitoring"].notes
    assert "API keys are off" in notes and "API keys are off" not in releases["tls-auth"].notes
    assert "https://demo-tandem-router.llm.svc:8443/v1" in releases["mtls-http"].notes


def test_every_container_runs_as_non_root(releases):
    for release in releases.values():
        for obj in release.objects:
            spec = obj.get("spec", {})
            pods = hp.ray_pod_templates(obj) if obj["kind"] == "RayCluster" else \
                [spec["template"]] if "template" in spec else [obj] if obj["kind"] == "Pod" else []
            for pod in pods:
                assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if n not in ("tls-auth", "tls-inline", "mtls-http")])
def test_without_api_keys_the_router_on_0_0_0_0_starts_open_instead_of_refusing(releases, name, tmp_path):
    from router.auth import build_authenticator

    cfg = cluster_config(releases[name], tmp_path)
    # auth.enabled unset would refuse to start: the router binds 0.0.0.0 and has no keys.
    assert build_authenticator(cfg.router.auth, cfg.router.host, environ={}).enabled is False
