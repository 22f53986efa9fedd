"""Throw-away TLS material laid out as the chart mounts it: a CA, the router's
kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) and a probe client certificate Secret.

A copy of the few lines tests/router needs too: test packages here are not importable from
one another (no __init__.py, rootdir-relative imports).
"""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path


def write_secrets(server_dir: Path, client_dir: Path) -> None:
    """The router's Secret files in ``server_dir``, the probe client's in ``client_dir``;
    the server certificate is valid for localhost and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject: str, issuer: x509.Name, key, signer, ca: bool, extensions=()):
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(signer, hashes.SHA256())

    def write(directory: Path, cert, key) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "tls.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("tandem chart test CA", name("tandem chart test CA"), ca_key, ca_key, True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = build("localhost", ca.subject, server_key, ca_key, False, [
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])])
    client = build("tandem probe", ca.subject, client_key, ca_key, False,
                   [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])
    write(server_dir, server, server_key)
    (server_dir / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write(client_dir, client, client_key)
