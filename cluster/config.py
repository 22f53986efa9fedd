"""The one typed cluster config: YAML file plus ``a.b.c=value`` overrides.

Every setting of a Tandem cluster lives here, in nested dataclasses (slots) with defaults
that run ``make run`` on the embedded stories260K model. ``load_config`` rejects unknown
keys and bad values with a ``ConfigError`` that names the dotted path of the field, e.g.
``pools.prefill.workers: must be >= 1, got 0``. ``to_dict`` round-trips through YAML; the
Helm chart renders the same schema.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Check = Callable[[Any], "str | None"]   # returns an error message, or None when fine


class ConfigError(ValueError):
    """A config problem; ``path`` is the dotted path of the offending field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def _ge(lo: float) -> Check:
    return lambda v: None if v is None or v >= lo else f"must be >= {lo}, got {v!r}"


def _gt(lo: float) -> Check:
    return lambda v: None if v is None or v > lo else f"must be > {lo}, got {v!r}"


def _port(v: Any) -> str | None:
    return None if v is None or 0 <= v <= 65535 else f"must be a port in 0..65535, got {v!r}"


def _name(v: Any) -> str | None:
    ok = v is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", v)
    return None if ok else f"must be a name of letters, digits, '_', '.', '-', got {v!r}"


def _redis_url(v: Any) -> str | None:
    ok = v is None or re.match(r"(rediss?|unix)://", v)
    return None if ok else f"must start with redis://, rediss:// or unix://, got {v!r}"


def _redis_size(v: Any) -> str | None:
    ok = isinstance(v, str) and re.fullmatch(r"[1-9][0-9]{0,12}(kb|mb|gb)", v.lower())
    return None if ok else f"must be a size like '512mb' or '2gb', got {v!r}"


def _device(v: Any) -> str | None:
    ok = re.fullmatch(r"auto|cpu|cuda(:\d+)?", v)
    return None if ok else f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}"


def _spec(default: Any = dataclasses.MISSING, *checks: Check, factory: Any = None) -> Any:
    meta = {"checks": checks}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(slots=True)
class ModelConfig:
    """The model every worker loads and how its engine is sized."""
    model: str = "stories260K"           # bundled name, preset name or checkpoint directory
    dtype: Literal["float32", "bfloat16", "float16"] | None = None   # None: the checkpoint's
    device: str = _spec("auto", _device)  # auto: CUDA where present, else CPU
    block_size: int = _spec(16, _ge(1))
    max_num_seqs: int = _spec(256, _ge(1))
    max_num_batched_tokens: int = _spec(2048, _ge(1))
    max_model_len: int | None = _spec(None, _ge(2))   # None: the model's context
    num_kv_blocks: int | None = _spec(None, _ge(2))   # None: max_num_seqs full contexts, <= 1 GiB
    enable_prefix_caching: bool = True
    seed: int = 0
    num_threads: int | None = _spec(None, _ge(1))     # torch intra-op threads per worker
    matmul_dtype: Literal["float32", "bfloat16"] | None = None   # bfloat16: AMX matmuls (opt-in)


@dataclass(slots=True)
class PoolConfig:
    """One worker pool (prefill or decode): size and resources per worker."""
    workers: int = _spec(1, _ge(1))
    cpus_per_worker: float = _spec(1.0, _gt(0))
    gpus_per_worker: float | None = _spec(None, _ge(0))  # None: 1 where a GPU is present, else 0
    max_restarts: int = _spec(3, _ge(-1))                 # -1: restart forever


@dataclass(slots=True)
class PoolsConfig:
    prefill: PoolConfig = field(default_factory=PoolConfig)
    decode: PoolConfig = field(default_factory=PoolConfig)


@dataclass(slots=True)
class KVTransferConfig:
    """How KV moves from prefill to decode workers."""
    codec: str = _spec("raw", _name)
    entropy: Literal["zstd", "lz4"] | None = None   # lossless stage after the codec
    transport: str = _spec("ray", _name)
    deadline_s: float = _spec(10.0, _gt(0))
    max_bytes: int = _spec(1 << 30, _ge(1))


@dataclass(slots=True)
class StoreConfig:
    """The Redis-backed global prefix store."""
    enabled: bool = True
    url: str | None = _spec(None, _redis_url)   # None: start a private redis-server
    private_maxmemory: str = _spec("512mb", _redis_size)   # the private server's LRU bound
    chunk_size: int = _spec(256, _ge(1))
    tenant_sharing: bool = False                # share prefixes across tenants
    local_cpu_bytes: int = _spec(256 << 20, _ge(0))   # LMCache commits its DRAM tier at start
    key_prefix: str = _spec("tandem", _name)


def _env_name(v: Any) -> str | None:
    ok = v is None or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", v)
    return None if ok else f"must be an environment variable name, got {v!r}"


@dataclass(slots=True)
class AuthConfig:
    """API keys (docs/security.md): never on the command line, only a file or an env var."""
    enabled: bool | None = None                 # None: on unless the router binds loopback only
    keys_file: str | None = None                # lines "<key>" or "<tenant>:<key> [rps=N ...]"
    keys_env: str = _spec("TANDEM_API_KEYS", _env_name)   # the same lines; ',' also separates


@dataclass(slots=True)
class TLSConfig:
    """TLS for gRPC, HTTP and metrics; ``client_ca`` set: clients need a certificate (mTLS)."""
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None


@dataclass(slots=True)
class LimitsConfig:
    """Refused at the edge when exceeded (400/413, INVALID_ARGUMENT/RESOURCE_EXHAUSTED)."""
    max_prompt_tokens: int | None = _spec(None, _ge(1))   # None: the model's context
    max_tokens: int | None = _spec(None, _ge(1))          # None: the model's context
    max_body_bytes: int = _spec(4 << 20, _ge(1024))       # HTTP request body
    max_message_bytes: int = _spec(4 << 20, _ge(1024))    # gRPC received message
    tenant_rps: float | None = _spec(None, _gt(0))        # requests/s per tenant; None: no limit
    tenant_burst: int | None = _spec(None, _ge(1))        # None: max(1, tenant_rps)
    tenant_max_concurrency: int | None = _spec(None, _ge(1))


@dataclass(slots=True)
class AdmissionConfig:
    """SLO-aware admission against the ``slo`` objectives (docs/metrics.md, router/admission.py)."""
    enabled: bool = True
    miss_margin: float = _spec(0.0, _ge(-0.9))  # refuse when estimate > objective * (1 + margin)
    max_queue: int = _spec(256, _ge(1))         # admitted requests still waiting for a first token


@dataclass(slots=True)
class RouterConfig:
    """The gRPC front end."""
    host: str = "127.0.0.1"
    grpc_port: int = _spec(50051, _port)        # 0: any free port
    metrics_port: int | None = _spec(None, _port)
    prefill_policy: str = _spec("prefix_aware", _name)
    decode_policy: str = _spec("kv_aware", _name)
    request_timeout_s: float = _spec(120.0, _gt(0))
    max_inflight: int = _spec(1024, _ge(1))     # admitted requests beyond this: RESOURCE_EXHAUSTED
    max_prompt_chars: int = _spec(1 << 20, _ge(1))
    health_poll_s: float = _spec(1.0, _gt(0))
    stream_interval_s: float = _spec(0.02, _ge(0))  # a steady token stream is polled this often
    http_port: int | None = _spec(None, _port)  # OpenAI-compatible HTTP; null: off, 0: any free port
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


@dataclass(slots=True)
class SLOConfig:
    ttft_ms: float = _spec(1000.0, _gt(0))
    tpot_ms: float = _spec(100.0, _gt(0))


@dataclass(slots=True)
class RayConfig:
    address: str | None = None       # None: start an embedded local Ray instance
    namespace: str = _spec("tandem", _name)
    include_dashboard: bool = False


@dataclass(slots=True)
class ClusterConfig:
    """Root of the Tandem config."""
    mode: Literal["disaggregated", "colocated"] = "disaggregated"
    model: ModelConfig = field(default_factory=ModelConfig)
    pools: PoolsConfig = field(default_factory=PoolsConfig)
    kv_transfer: KVTransferConfig = field(default_factory=KVTransferConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> None:
        """Check every field and the cross-field rules; raise ConfigError naming the path."""
        _check_tree(self, "")
        if self.store.chunk_size % self.model.block_size:
            raise ConfigError("store.chunk_size", f"must be a multiple of model.block_size "
                              f"({self.model.block_size}), got {self.store.chunk_size}")
        if self.model.max_num_batched_tokens < self.model.block_size:
            raise ConfigError("model.max_num_batched_tokens",
                              f"must be >= model.block_size ({self.model.block_size})")
        tls = self.router.tls
        if (tls.cert is None) != (tls.key is None):
            raise ConfigError("router.tls.key" if tls.key is None else "router.tls.cert",
                              "router.tls.cert and router.tls.key must be set together")
        if tls.client_ca is not None and tls.cert is None:
            raise ConfigError("router.tls.client_ca", "needs router.tls.cert and router.tls.key")

    def require_choice(self, path: str, allowed: Iterable[str]) -> None:
        """Raise ConfigError unless the string at ``path`` is in ``allowed`` (a registry's names)."""
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part)
        names = sorted(allowed)
        if value not in names:
            raise ConfigError(path, f"unknown name {value!r}; known: {', '.join(names)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-safe) that ``from_dict`` reads back to an equal config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """Build and validate from a nested dict; raise ConfigError naming the path."""
        config = _build(cls, data, "")
        config.validate()
        return config


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ClusterConfig:
    """Read the YAML file at ``path`` (defaults when None), apply ``a.b.c=value`` overrides.

    Override values are parsed as YAML scalars (``3``, ``0.5``, ``true``, ``null``, ``raw``).
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("", f"cannot read config file {path}: {exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("", f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("", f"{path} must hold a mapping at the top level")
        data = loaded or {}
    for item in overrides:
        _apply_override(data, item)
    return ClusterConfig.from_dict(data)


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
        raise ConfigError("", f"override {item!r} must look like 'a.b.c=value'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"cannot parse override value {raw!r}: {exc}") from exc
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[:i + 1]), "is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(path, f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(_join(path, str(key)), f"unknown key; known: {', '.join(names)}")
    kwargs = {k: _coerce(hints[k], v, _join(path, k)) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if value is None:
            raise ConfigError(path, "must not be null")
        return _coerce(inner[0], value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(path, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(path, f"must be a non-empty string, got {value!r}")
        return value
    raise ConfigError(path, f"unsupported field type {tp!r}")  # a schema bug, not user input


def _check_tree(node: Any, path: str) -> None:
    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):
        value, where = getattr(node, f.name), _join(path, f.name)
        if dataclasses.is_dataclass(value):
            _check_tree(value, where)
            continue
        _coerce(hints[f.name], value, where)   # catches wrong types set in code, too
        for check in f.metadata.get("checks", ()):
            problem = check(value)
            if problem:
                raise ConfigError(where, problem)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
