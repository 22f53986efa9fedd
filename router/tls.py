"""TLS (and mTLS) for the router's listeners, from PEM files named in ``router.tls``.

One certificate and key serve gRPC, HTTP and the metrics port. With ``client_ca`` set,
every client must present a certificate that CA signed (mutual TLS). Files are read once
at start-up; a missing or unreadable file is a ConfigError naming the field.
"""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from router.config import TLSConfig
from tandem_common.config import ConfigError

logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class TLSMaterial:
    """The PEM bytes of a server identity and, for mTLS, the client CA."""
    cert_path: str
    key_path: str
    cert: bytes
    key: bytes
    client_ca_path: str | None = None
    client_ca: bytes | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


def _read(path: str, field: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"router.tls.{field}",
                          f"cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"router.tls.{field}", f"{path} is not a PEM file")
    return data


def load_tls(cfg: TLSConfig) -> TLSMaterial | None:
    """The TLS material of ``cfg``, or None when TLS is off; checked by building a context."""
    if cfg.cert is None and cfg.key is None:
        if cfg.client_ca is not None:
            raise ConfigError("router.tls.client_ca", "needs router.tls.cert and router.tls.key")
        return None
    if cfg.cert is None or cfg.key is None:
        raise ConfigError("router.tls", "router.tls.cert and router.tls.key must be set together")
    client_ca = _read(cfg.client_ca, "client_ca") if cfg.client_ca else None
    material = TLSMaterial(cfg.cert, cfg.key, _read(cfg.cert, "cert"), _read(cfg.key, "key"),
                           cfg.client_ca, client_ca)
    ssl_context(material)   # fails now, with the field named, rather than at the first client
    logger.info("TLS on (%s)", "mutual: client certificates required" if material.mutual
                else "server certificate only")
    return material


def ssl_context(material: TLSMaterial) -> ssl.SSLContext:
    """A server-side SSLContext for aiohttp listeners (TLS 1.2+)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(material.cert_path, material.key_path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("router.tls.cert", f"certificate and key do not load: {exc}") from None
    if material.client_ca_path is not None:
        try:
            ctx.load_verify_locations(material.client_ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("router.tls.client_ca", f"CA does not load: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def grpc_credentials(material: TLSMaterial) -> grpc.ServerCredentials:
    """Server credentials for ``add_secure_port``; mTLS when a client CA is set."""
    return grpc.ssl_server_credentials(
        [(material.key, material.cert)], root_certificates=material.client_ca,
        require_client_auth=material.mutual)
