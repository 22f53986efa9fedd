"""Shared by the front-door tests (auth, TLS, admission, metrics, HTTP, fuzz): a real router
over a real stories260K engine with HTTP and metrics on free loopback ports, real TLS
material generated with ``cryptography``, and small waits."""
from __future__ import annotations

import datetime
import ipaddress
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("LMCACHE_TRACK_USAGE", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from router.config import (AdmissionConfig, AuthConfig, LimitsConfig, RouterConfig,  # noqa: E402
                           SLOConfig, TLSConfig)
from router.backends.local import LocalBackend  # noqa: E402
from router.server import RouterServer  # noqa: E402
from router.testing import BackgroundRouter  # noqa: E402
from waiting import wait_until  # noqa: E402 - re-exported for the front-door tests

KEY_A = "key-alpha-0123456789abcdef"
KEY_B = "key-bravo-0123456789abcdef"
KEYS_TEXT = f"# tenants of the tests\nalpha:{KEY_A}\nbravo:{KEY_B}\n"


def make_llm(**kwargs):
    from engine import LLM
    return LLM(model=kwargs.pop("model", "stories260K"), max_num_seqs=kwargs.pop("max_num_seqs", 8),
               **kwargs)


class FrontDoorRouter(BackgroundRouter):
    """A BackgroundRouter whose server also gets the ``slo`` objectives."""

    def __init__(self, backend, config: RouterConfig, slo: SLOConfig | None = None) -> None:
        super().__init__(backend, config)
        self.server = RouterServer(backend, config, slo=slo)

    @property
    def http_url(self) -> str:
        scheme = "https" if self.config.tls.cert else "http"
        return f"{scheme}://127.0.0.1:{self.server.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.metrics_port}/metrics"

    def engine(self, fn):
        return self.call(self.backend.run_on_engine(fn))

    def wait_idle(self, timeout: float = 15.0) -> None:
        """Until the engine holds no request and every KV block is free again."""
        total = self.engine(lambda e: e.pool.num_blocks)
        wait_until(lambda: self.engine(lambda e: (e.free_block_count(), len(e.requests)))
                   == (total, 0), timeout, "engine idle with every KV block free")


def router_config(keys_file: str | None = None, **kwargs) -> RouterConfig:
    auth = kwargs.pop("auth", AuthConfig(keys_file=keys_file, keys_env="TANDEM_TEST_NO_KEYS"))
    return RouterConfig(grpc_port=0, http_port=0, metrics_port=0, auth=auth,
                        limits=kwargs.pop("limits", LimitsConfig()),
                        admission=kwargs.pop("admission", AdmissionConfig()), **kwargs)


def start_router(llm=None, config: RouterConfig | None = None, slo: SLOConfig | None = None,
                 **backend_kwargs) -> FrontDoorRouter:
    router = FrontDoorRouter(LocalBackend(llm or make_llm(), **backend_kwargs),
                             config or router_config(), slo)
    router.start()
    return router


def write_keys(tmp_path: Path, text: str = KEYS_TEXT) -> str:
    path = tmp_path / "api-keys"
    path.write_text(text)
    return str(path)


def scrape(url: str, context=None) -> str:
    with urllib.request.urlopen(url, timeout=10, context=context) as resp:
        return resp.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@dataclass(slots=True)
class TLSFiles:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def config(self, mutual: bool = False) -> TLSConfig:
        return TLSConfig(cert=self.server_cert, key=self.server_key,
                         client_ca=self.ca if mutual else None)


def make_tls(directory: Path) -> TLSFiles:
    """A throw-away CA, a server certificate for localhost/127.0.0.1 and a client one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert, key) -> tuple[str, str]:
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return str(cert_path), str(key_path)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("tandem test CA"))
          .issuer_name(name("tandem test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_path, _ = write("ca", ca, ca_key)

    def leaf(cn: str, usage, sans):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                              [x509.DNSName("localhost"),
                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client, client_key = leaf("tandem test client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    server_paths = write("server", server, server_key)
    client_paths = write("client", client, client_key)
    return TLSFiles(ca_path, *server_paths, *client_paths)
