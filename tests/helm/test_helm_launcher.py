"""files/tandem_k8s.py, the chart's in-pod helper: the Redis URL it builds, the config it
writes, the Ray resources it waits for (real Ray), and the `helm test` client run exactly as
the rendered test Pod runs it, against a real router over loopback."""
from __future__ import annotations

import importlib.util
import socket
import stat
import subprocess
import sys

import pytest
import redis
import yaml

import helm_pipeline as hp
from cluster.config import load_config

SCRIPT = hp.CHART_DIR / "files" / "tandem_k8s.py"


def _load_launcher():
    spec = importlib.util.spec_from_file_location("tandem_k8s", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


k8s = _load_launcher()


def redis_password(url: str) -> str | None:
    return redis.ConnectionPool.from_url(url).connection_kwargs.get("password")


@pytest.mark.parametrize("url, password, expected", [
    ("redis://r.llm.svc:6379/0", "s3cr3t", "redis://:s3cr3t@r.llm.svc:6379/0"),
    ("rediss://cache:6380/2", "p@ss:w/rd #1", "rediss://:p%40ss%3Aw%2Frd%20%231@cache:6380/2"),
    ("redis://tandem@cache:6379", "pw", "redis://tandem:pw@cache:6379"),
    ("redis://:old@cache:6379", "new", "redis://:new@cache:6379"),
    ("redis://cache:6379/0", None, "redis://cache:6379/0"),
])
def test_with_password_percent_encodes_and_redis_py_reads_it_back(url, password, expected):
    built = k8s.with_password(url, password)
    assert built == expected
    assert redis_password(built) == password


def test_with_password_on_a_unix_socket_uses_the_query():
    built = k8s.with_password("unix:///run/redis.sock?db=1", "a&b")
    kwargs = redis.ConnectionPool.from_url(built).connection_kwargs
    assert (kwargs["password"], kwargs["path"], kwargs["db"]) == ("a&b", "/run/redis.sock", 1)


def test_with_password_rejects_a_url_it_cannot_place_a_password_in():
    with pytest.raises(k8s.LaunchError, match="store.url"):
        k8s.with_password("http://cache:6379", "pw")


@pytest.mark.parametrize("name", ["cpu-default", "gpu-external-redis"])
def test_write_config_adds_the_password_to_the_rendered_config(releases, name, tmp_path):
    chart_config = tmp_path / "config.yaml"
    chart_config.write_text(releases[name].one("ConfigMap", "-config")["data"]["config.yaml"])
    out = tmp_path / "run" / "config.yaml"
    cfg = k8s.write_config(chart_config, out, "Zx9-pw")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    reloaded = load_config(out)
    assert reloaded == cfg and redis_password(reloaded.store.url) == "Zx9-pw"
    assert reloaded.to_dict() | {"store": None} == load_config(chart_config).to_dict() | {"store": None}


def test_write_config_refuses_a_config_the_loader_rejects(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text(yaml.safe_dump({"pools": {"decode": {"workers": 0}}}))
    with pytest.raises(ValueError, match="pools.decode.workers"):
        k8s.write_config(bad, tmp_path / "out.yaml", None)
    assert not (tmp_path / "out.yaml").exists()


def test_required_resources_are_what_the_gpu_value_set_advertises(releases, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(releases["gpu-external-redis"].one("ConfigMap", "-config")["data"]["config.yaml"])
    assert k8s.required_resources(load_config(path)) == {"tandem_prefill": 4, "tandem_decode": 3}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=1, resources={"tandem_prefill": 2, "tandem_decode": 1},
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_wait_for_resources_returns_once_the_groups_are_there(ray_cluster):
    k8s.wait_for_resources({"tandem_prefill": 2, "tandem_decode": 1}, 5.0, ray_cluster.cluster_resources)


def test_wait_for_resources_times_out_naming_what_is_missing(ray_cluster):
    with pytest.raises(k8s.LaunchError, match=r"tandem_decode: 1 of 2"):
        k8s.wait_for_resources({"tandem_prefill": 2, "tandem_decode": 2}, 0.3,
                               ray_cluster.cluster_resources, poll_s=0.1)


@pytest.fixture(scope="module")
def router():
    from engine import LLM
    from router.backends.local import LocalBackend
    from router.testing import BackgroundRouter

    with BackgroundRouter(LocalBackend(LLM(model="stories260K", max_num_seqs=2))) as r:
        yield r


def run_helper(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def pod_args(release: hp.Rendered, target: str) -> list[str]:
    """The rendered `helm test` Pod's arguments, aimed at ``target``."""
    args = list(release.one("Pod", "-test-generate")["spec"]["containers"][0]["args"])
    args[args.index("--target") + 1] = target
    return args


def test_helm_test_pod_command_checks_health_and_generates(releases, router):
    result = run_helper(pod_args(releases["cpu-default"], router.target))
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout
    assert "tokens, finish=" in result.stdout and "[0 tokens" not in result.stdout


@pytest.mark.parametrize("service", ["", "tandem.v1.Tandem"])
def test_health_subcommand_reports_serving(router, service):
    result = run_helper(["health", "--target", router.target, "--service", service])
    assert result.returncode == 0, result.stderr


def test_health_and_generate_fail_cleanly_without_a_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again before use: nothing listens there
    for sub in ("health", "generate"):
        result = run_helper([sub, "--target", f"127.0.0.1:{port}", "--timeout", "2"])
        assert result.returncode == 1 and "failed" in result.stderr and "Traceback" not in result.stderr


def test_tls_health_check_does_not_fall_back_to_plaintext(router, tmp_path):
    result = run_helper(["health", "--target", router.target, "--tls-ca", str(tmp_path / "absent.crt"),
                         "--server-name", "tandem.example.internal", "--timeout", "2"])
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr


@pytest.mark.parametrize("text, key", [
    ("tk-0123456789abcdef0123\ntk-fedcba9876543210fedc\n", "tk-0123456789abcdef0123"),
    ("# tenants\n\nalpha:tk-alpha-0123456789abcdef rps=5 burst=10\n", "tk-alpha-0123456789abcdef"),
    ("  bravo:tk-bravo-0123456789abcdef   # the second team\n", "tk-bravo-0123456789abcdef"),
    ("tk-a-0123456789abcdef,tk-b-0123456789abcdef", "tk-a-0123456789abcdef"),
    ("# only a comment\n\n", None),
])
def test_first_api_key_reads_the_routers_key_file_format(text, key):
    assert k8s.first_api_key(text) == key


# Where the chart mounts the router's Secrets, longest first (tls-client before tls).
MOUNTS = ("/etc/tandem/tls-client", "/etc/tandem/tls", "/etc/tandem/auth")


class ChartRouter:
    """A real router started from a release's rendered config, with the Secrets the chart
    mounts laid out under ``root`` and the rendered paths pointed there."""

    def __init__(self, release: hp.Rendered, root):
        import base64
        import dataclasses

        from tls_material import write_secrets

        self.dirs = {m: root / m.rsplit("/", 1)[1] for m in MOUNTS}
        write_secrets(self.dirs["/etc/tandem/tls"], self.dirs["/etc/tandem/tls-client"])
        keys = release.one("Secret", "-api-keys")["data"]["api-keys"]
        self.dirs["/etc/tandem/auth"].mkdir()
        (self.dirs["/etc/tandem/auth"] / "api-keys").write_bytes(base64.b64decode(keys))
        path = root / "config.yaml"
        path.write_text(self.local(release.one("ConfigMap", "-config")["data"]["config.yaml"]))
        rendered = load_config(path).router
        self.config = dataclasses.replace(   # the pod's ports, free ones on loopback here
            rendered, host="127.0.0.1", grpc_port=0,
            http_port=None if rendered.http_port is None else 0,
            metrics_port=None if rendered.metrics_port is None else 0)

    def local(self, text: str) -> str:
        for mount in MOUNTS:
            text = text.replace(mount, str(self.dirs[mount]))
        return text

    def args(self, args: list[str], target: str) -> list[str]:
        """Rendered helper arguments aimed at this router; the certificate is for localhost."""
        args = [self.local(a) for a in args]
        args[args.index("--target") + 1] = target
        args[args.index("--server-name") + 1] = "localhost"
        return args

    def __enter__(self):
        from engine import LLM
        from router.backends.local import LocalBackend
        from router.testing import BackgroundRouter

        self.router = BackgroundRouter(LocalBackend(LLM(model="stories260K", max_num_seqs=2)), self.config)
        self.router.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.router.__exit__(*exc_info)


def test_mutual_tls_release_probes_and_helm_test_pass_against_a_real_router(releases, tmp_path):
    release = releases["mtls-http"]
    with ChartRouter(release, tmp_path) as chart:
        target = chart.router.target
        container = release.one("Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = chart.args(container[kind]["exec"]["command"], target)
            assert command[:2] == ["python", "/opt/tandem-k8s/tandem_k8s.py"]
            result = run_helper(command[2:])
            assert result.returncode == 0, f"{kind}: {result.stderr}"
            # Without the probe client certificate the router refuses the handshake.
            cut = command.index("--tls-cert")
            result = run_helper(command[2:cut] + command[cut + 4:] + ["--timeout", "2"])
            assert result.returncode == 1 and "UNAVAILABLE" in result.stderr, kind
        # `helm test`: health, then a generation with the first key of the chart's Secret
        # (a "<tenant>:<key> rps=... burst=..." entry).
        result = run_helper(chart.args(pod_args(release, target), target))
        assert result.returncode == 0, result.stderr
        assert "tokens, finish=" in result.stdout and "[0 tokens" not in result.stdout


def test_https_health_probe_answers_kubelet_without_a_key_or_verification(releases, tmp_path):
    import ssl
    import urllib.request

    release = releases["tls-inline"]
    probe = release.one("Deployment", "-router")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    with ChartRouter(release, tmp_path) as chart:
        assert chart.config.auth.enabled and chart.config.http_port == 0
        port = chart.router.server.http_port
        kubelet = ssl.create_default_context()
        kubelet.check_hostname, kubelet.verify_mode = False, ssl.CERT_NONE   # as kubelet does
        url = f"{probe['httpGet']['scheme'].lower()}://127.0.0.1:{port}{probe['httpGet']['path']}"
        with urllib.request.urlopen(url, context=kubelet, timeout=10) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:   # the API itself needs a key
            urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/models", context=kubelet, timeout=10)
        assert refused.value.code == 401
