"""API keys: who is calling, and as which tenant (docs/security.md).

Keys come from a file (``router.auth.keys_file``) and/or an environment variable
(``router.auth.keys_env``, default ``TANDEM_API_KEYS``), never from the command line. One
entry a line (in the variable, ``,`` separates entries too); ``#`` starts a comment::

    <key>                                          tenant "key-<8 hex of sha256(key)>"
    <tenant>:<key> [rps=5] [burst=10] [concurrency=4]

A key is 16-256 characters of ``A-Z a-z 0-9 . _ ~ + / = -``; a tenant 1-64 of
``A-Z a-z 0-9 . _ -``. Only SHA-256 digests of keys are kept, and a presented token is
compared with every digest by ``hmac.compare_digest`` without stopping at a match, so the
time taken says nothing about which key, or how much of one, was right.

Auth is on whenever keys are configured or the router binds anything other than loopback;
``router.auth.enabled: false`` turns it off explicitly (with a warning).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from router.config import AuthConfig
from tandem_common.config import ConfigError
from router.errors import RouterError

logger = logging.getLogger(__name__)

_KEY = re.compile(r"[A-Za-z0-9._~+/=\-]{16,256}")
_TENANT = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_MAX_TOKEN_CHARS = 512
_OPTIONS = {"rps": float, "burst": int, "concurrency": int}


class Unauthenticated(RouterError):
    """No API key, or one that is not known."""
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RouterError):
    """A valid key asked for something it may not (another tenant)."""
    code = grpc.StatusCode.PERMISSION_DENIED


@dataclass(slots=True, frozen=True)
class TenantLimits:
    """Per-key overrides of ``router.limits`` (None: the configured default)."""
    rps: float | None = None
    burst: int | None = None
    concurrency: int | None = None


@dataclass(slots=True, frozen=True)
class Principal:
    """The caller. ``tenant`` None: auth is off and the request's own tenant field is used."""
    tenant: str | None
    key_id: str = ""                 # 8 hex of the key's digest: safe to log
    limits: TenantLimits = TenantLimits()

    def tenant_for(self, requested: str) -> str:
        """The tenant a request runs as; a key may not act for another tenant."""
        if self.tenant is None:
            return requested
        if requested and requested != self.tenant:
            raise PermissionDenied(f"this API key belongs to tenant {self.tenant!r}, "
                                   f"not {requested[:64]!r}")
        return self.tenant


ANONYMOUS = Principal(None)


@dataclass(slots=True, frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_keys(text: str, source: str) -> list[tuple[bytes, Principal]]:
    """Parse key lines; ConfigError names ``source`` and the line, never the key."""
    out = []
    for lineno, line in enumerate(re.split(r"[\n,]", text), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}: entry {lineno}"
        head, *opts = line.split()
        tenant, sep, key = head.rpartition(":")
        if not _KEY.fullmatch(key):
            raise ConfigError(where, "an API key must be 16-256 characters of letters, digits "
                              "and . _ ~ + / = -")
        digest = _digest(key)
        if sep and not _TENANT.fullmatch(tenant):
            raise ConfigError(where, "a tenant must be 1-64 characters of letters, digits, . _ -")
        limits = _parse_options(opts, where)
        out.append((digest, Principal(tenant if sep else f"key-{digest.hex()[:8]}",
                                      digest.hex()[:8], limits)))
    return out


def _parse_options(opts: list[str], where: str) -> TenantLimits:
    values: dict[str, float | int] = {}
    for opt in opts:
        name, sep, raw = opt.partition("=")
        if not sep or name not in _OPTIONS:
            raise ConfigError(where, f"unknown option {opt[:32]!r}; "
                              "known: rps=, burst=, concurrency=")
        try:
            value = _OPTIONS[name](raw)
        except ValueError:
            raise ConfigError(where, f"{name} must be a number, got {raw[:32]!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise ConfigError(where, f"{name} must be > 0, got {raw[:32]!r}")
        values[name] = value
    return TenantLimits(**values)


class Authenticator:
    """Maps bearer tokens to principals; ``enabled`` False lets everyone in as ANONYMOUS."""

    def __init__(self, keys: Iterable[tuple[bytes, Principal]] = (), enabled: bool = True) -> None:
        self._entries: list[_Entry] = []
        seen: set[bytes] = set()
        for digest, principal in keys:
            if digest in seen:
                raise ConfigError("router.auth", f"API key {principal.key_id} is listed twice")
            seen.add(digest)
            self._entries.append(_Entry(digest, principal))
        self.enabled = enabled
        if enabled and not self._entries:
            raise ConfigError("router.auth", "auth is on but no API key is configured")

    @property
    def tenants(self) -> set[str]:
        return {e.principal.tenant for e in self._entries if e.principal.tenant}

    def authenticate(self, token: str | None) -> Principal:
        """The principal of ``token``; Unauthenticated when it is missing or unknown."""
        if not self.enabled:
            return ANONYMOUS
        if not token:
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        if len(token) > _MAX_TOKEN_CHARS:
            raise Unauthenticated("invalid API key")
        digest = _digest(token)
        found = None
        for entry in self._entries:      # every entry, always: no early exit
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        if found is None:
            raise Unauthenticated("invalid API key")
        return found


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (None when absent or not Bearer)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def grpc_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The bearer token in gRPC invocation metadata (key ``authorization``)."""
    for key, value in metadata or ():
        if key == "authorization":
            return bearer_token(value.decode("latin-1") if isinstance(value, bytes) else value)
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_authenticator(cfg: AuthConfig, host: str,
                        environ: Mapping[str, str] = os.environ) -> Authenticator:
    """Load the configured keys and decide whether auth is on; say so at start-up."""
    keys: list[tuple[bytes, Principal]] = []
    if cfg.keys_file is not None:
        try:
            text = Path(cfg.keys_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("router.auth.keys_file", f"cannot read {cfg.keys_file}: "
                              f"{type(exc).__name__}") from None
        keys += parse_keys(text, "router.auth.keys_file")
    env_text = environ.get(cfg.keys_env, "")
    if env_text.strip():
        keys += parse_keys(env_text, f"${cfg.keys_env}")
    loopback = is_loopback(host)
    enabled = cfg.enabled if cfg.enabled is not None else (bool(keys) or not loopback)
    if enabled and not keys:
        raise ConfigError("router.auth", f"auth is on (the router binds {host}, not loopback "
                          f"only) but no API key is configured: set router.auth.keys_file or "
                          f"${cfg.keys_env}, or router.auth.enabled=false to run open")
    if enabled:
        auth = Authenticator(keys, enabled=True)
        logger.info("auth on: %d API keys, %d tenants", len(keys), len(auth.tenants))
        return auth
    if not loopback:
        logger.warning("AUTH IS OFF on %s (router.auth.enabled=false): anyone who can reach "
                       "this address can use the cluster", host)
    elif keys:
        logger.warning("auth is off (router.auth.enabled=false): %d configured keys ignored",
                       len(keys))
    else:
        logger.warning("auth is off: the router listens on loopback (%s) only and no API keys "
                       "are configured", host)
    return Authenticator(enabled=False)
