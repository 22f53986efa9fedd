"""TLS and mutual TLS on every listener of a real router (gRPC, OpenAI HTTP, metrics) with a
self-signed CA generated here, and the store's Redis client over AUTH and TLS URLs against
a real redis-server."""
from __future__ import annotations

import shutil
import ssl
import subprocess
import time

import urllib.error

import grpc
import openai
import pytest

from frontdoor_helpers import KEY_A, make_tls, router_config, scrape, start_router, write_keys

from router.config import TLSConfig
from tandem_common.config import ConfigError
from kv_transfer.redis_server import free_loopback_port
from kv_transfer.store.redis_client import close_client, make_client
from router.tls import load_tls
from tandem_client import TandemClient
from tandem_client.errors import TandemError


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls(tmp_path_factory.mktemp("tls"))


def _grpc_creds(files, with_client_cert: bool) -> grpc.ChannelCredentials:
    ca = open(files.ca, "rb").read()
    if not with_client_cert:
        return grpc.ssl_channel_credentials(ca)
    return grpc.ssl_channel_credentials(ca, open(files.client_key, "rb").read(),
                                        open(files.client_cert, "rb").read())


def _ssl_ctx(files, with_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=files.ca)
    if with_client_cert:
        ctx.load_cert_chain(files.client_cert, files.client_key)
    return ctx


def test_tls_round_trip_on_grpc_http_and_metrics_with_auth(tls_files, tmp_path):
    config = router_config(write_keys(tmp_path), tls=tls_files.config())
    router = start_router(config=config)
    try:
        with TandemClient(router.target, credentials=_grpc_creds(tls_files, False),
                          metadata=[("authorization", f"Bearer {KEY_A}")], retries=0) as client:
            assert client.generate("Once upon a time", max_tokens=3).usage.completion_tokens == 3
        with TandemClient(router.target, retries=0, timeout=5) as plain:   # no TLS: refused
            with pytest.raises(TandemError):
                plain.generate("Once upon a time", max_tokens=3)
        http = openai.DefaultHttpxClient(verify=_ssl_ctx(tls_files, False))
        with openai.OpenAI(base_url=f"{router.http_url}/v1", api_key=KEY_A, http_client=http,
                           max_retries=0) as oai:
            out = oai.completions.create(model="stories260K", prompt="Hi", max_tokens=2)
            assert out.usage.completion_tokens == 2
        metrics = scrape(router.metrics_url.replace("http://", "https://"),
                         _ssl_ctx(tls_files, False))
        assert "tandem_requests_total" in metrics
    finally:
        router.stop()


def test_mutual_tls_needs_a_client_certificate_from_the_configured_ca(tls_files):
    router = start_router(config=router_config(tls=tls_files.config(mutual=True)))
    try:
        with TandemClient(router.target, credentials=_grpc_creds(tls_files, True),
                          retries=0) as client:
            assert client.generate("Once", max_tokens=2).usage.completion_tokens == 2
        with TandemClient(router.target, credentials=_grpc_creds(tls_files, False),
                          retries=0, timeout=5) as anonymous:
            with pytest.raises(TandemError):
                anonymous.generate("Once", max_tokens=2)
        health = f"{router.http_url}/health"
        assert '"ok"' in scrape(health, _ssl_ctx(tls_files, True))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            scrape(health, _ssl_ctx(tls_files, False))
    finally:
        router.stop()


def test_bad_tls_files_are_config_errors_naming_the_field(tls_files, tmp_path):
    with pytest.raises(ConfigError, match="router.tls.cert"):
        load_tls(TLSConfig(cert=str(tmp_path / "missing.crt"), key=tls_files.server_key))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="router.tls.key"):
        load_tls(TLSConfig(cert=tls_files.server_cert, key=str(tmp_path / "junk.pem")))
    with pytest.raises(ConfigError, match="router.tls.cert"):   # a key that is not the cert's
        load_tls(TLSConfig(cert=tls_files.server_cert, key=tls_files.client_key))
    with pytest.raises(ConfigError, match="router.tls"):
        load_tls(TLSConfig(cert=tls_files.server_cert))
    assert load_tls(TLSConfig()) is None


@pytest.fixture
def secure_redis(tls_files, tmp_path):
    """A real redis-server with a password, on a plain port and a TLS port."""
    port, tls_port = free_loopback_port(), free_loopback_port()
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", "s3cret-pass",
                             "--tls-port", str(tls_port), "--tls-cert-file", tls_files.server_cert,
                             "--tls-key-file", tls_files.server_key, "--tls-ca-cert-file",
                             tls_files.ca, "--tls-auth-clients", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            client = make_client(f"redis://:s3cret-pass@127.0.0.1:{port}/0", 1.0)
            try:
                client.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                close_client(client)
        yield port, tls_port
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_store_client_speaks_redis_auth_and_tls_urls(secure_redis, tls_files):
    port, tls_port = secure_redis
    for url in (f"redis://:s3cret-pass@127.0.0.1:{port}/0",
                f"rediss://:s3cret-pass@127.0.0.1:{tls_port}/0?ssl_ca_certs={tls_files.ca}"
                "&ssl_cert_reqs=required"):
        client = make_client(url, 2.0)
        try:
            client.set("tandem:probe", b"\x00\x01kv")
            assert client.get("tandem:probe") == b"\x00\x01kv"
        finally:
            close_client(client)
    for url in (f"redis://127.0.0.1:{port}/0", f"redis://:wrong@127.0.0.1:{port}/0"):
        client = make_client(url, 2.0)
        try:
            with pytest.raises(Exception, match="(?i)auth|password|NOAUTH|WRONGPASS"):
                client.get("tandem:probe")
        finally:
            close_client(client)
