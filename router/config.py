"""The router's settings: the front door, its security, limits, admission and objectives.

``cluster.config`` composes these under ``router:`` and ``slo:``; the checks and the
``ConfigError`` naming a dotted path come from ``tandem_common.config``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tandem_common.config import ConfigError, env_name, ge, gt, name, port, setting


@dataclass(slots=True)
class AuthConfig:
    """API keys (docs/security.md): never on the command line, only a file or an env var."""
    enabled: bool | None = None                 # None: on unless the router binds loopback only
    keys_file: str | None = None                # lines "<key>" or "<tenant>:<key> [rps=N ...]"
    keys_env: str = setting("TANDEM_API_KEYS", env_name)   # the same lines; ',' also separates


@dataclass(slots=True)
class TLSConfig:
    """TLS for gRPC, HTTP and metrics; ``client_ca`` set: clients need a certificate (mTLS)."""
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None


@dataclass(slots=True)
class LimitsConfig:
    """Refused at the edge when exceeded (400/413, INVALID_ARGUMENT/RESOURCE_EXHAUSTED)."""
    max_prompt_tokens: int | None = setting(None, ge(1))   # None: the model's context
    max_tokens: int | None = setting(None, ge(1))          # None: the model's context
    max_body_bytes: int = setting(4 << 20, ge(1024))       # HTTP request body
    max_message_bytes: int = setting(4 << 20, ge(1024))    # gRPC received message
    tenant_rps: float | None = setting(None, gt(0))        # requests/s per tenant; None: no limit
    tenant_burst: int | None = setting(None, ge(1))        # None: max(1, tenant_rps)
    tenant_max_concurrency: int | None = setting(None, ge(1))
    # Redis URL where every router of the cluster keeps the tenant limits (shared); null: per router
    shared_url: str | None = None


@dataclass(slots=True)
class AdmissionConfig:
    """SLO-aware admission against the ``slo`` objectives (docs/metrics.md, router/admission.py)."""
    enabled: bool = True
    miss_margin: float = setting(0.0, ge(-0.9))  # refuse when estimate > objective * (1 + margin)
    max_queue: int = setting(256, ge(1))         # admitted requests still waiting for a first token
    # Plan with the prompt tokens the workers report queued (and the requests they decode)
    # where that is more than this router's own books: with several routers the others'
    # requests count too (reports lag by router.health_poll_s). The chart sets it with replicas > 1.
    worker_queues: bool = False


@dataclass(slots=True)
class RouterConfig:
    """The gRPC front end."""
    host: str = "127.0.0.1"
    grpc_port: int = setting(50051, port)        # 0: any free port
    metrics_port: int | None = setting(None, port)
    prefill_policy: str = setting("prefix_aware", name)
    decode_policy: str = setting("kv_aware", name)
    request_timeout_s: float = setting(120.0, gt(0))
    max_inflight: int = setting(1024, ge(1))     # admitted requests beyond this: RESOURCE_EXHAUSTED
    max_prompt_chars: int = setting(1 << 20, ge(1))
    health_poll_s: float = setting(1.0, gt(0))
    stream_interval_s: float = setting(0.02, ge(0))  # a steady token stream is polled this often
    http_port: int | None = setting(None, port)  # OpenAI-compatible HTTP; null: off, 0: any free port
    # Disaggregated: a prompt that would queue behind a busy prefill pool is computed on its
    # decode worker instead (router/backends/overflow.py), if its prefill stalls that worker's
    # decodes for at most overflow_max_stall_tpot TPOT objectives.
    prefill_overflow: bool = True
    overflow_max_stall_tpot: float = setting(8.0, gt(0))
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)

    def check(self, path: str = "router") -> None:
        """Cross-field rules (the per-field checks run in ``tandem_common.config.validate``)."""
        tls = self.tls
        if (tls.cert is None) != (tls.key is None):
            raise ConfigError(f"{path}.tls.key" if tls.key is None else f"{path}.tls.cert",
                              f"{path}.tls.cert and {path}.tls.key must be set together")
        if tls.client_ca is not None and tls.cert is None:
            raise ConfigError(f"{path}.tls.client_ca", f"needs {path}.tls.cert and {path}.tls.key")


@dataclass(slots=True)
class SLOConfig:
    """The latency objectives admission and the metrics measure against."""
    ttft_ms: float = setting(1000.0, gt(0))
    tpot_ms: float = setting(100.0, gt(0))
