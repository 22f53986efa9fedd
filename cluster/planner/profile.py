"""A worker's costs on some hardware: the latency model the simulator and the planner use.

A profile is versioned JSON (``Profile.to_json`` / ``Profile.load``) describing one *worker*
(a Tandem pool actor: some CPU threads, or some GPUs with tensor parallelism):

- ``prefill``: ms to compute a prompt of n new tokens, ``base_ms + ms_per_token*n +
  ms_per_token2*n^2`` (the quadratic term is attention);
- ``decode``: ms of one continuous-batching step over b sequences holding C context tokens
  in all, ``base_ms + ms_per_seq*b + ms_per_ctx_token*C`` (weights read once per step, per
  sequence compute, KV read per context token);
- ``handoff``: ms to move a request's KV from a prefill to a decode worker, ``base_ms +
  bytes / (gb_per_s * 1e6)``, with ``kv_bytes_per_token`` of the model;
- ``limits``: ``max_batch`` sequences and ``kv_tokens`` of KV a worker holds;
- ``overhead``: what serving adds to the engine's costs, ``ttft_ms`` to every first token and
  ``step_factor`` on every step (1 and 0 for a roofline: the engine alone).

Three sources: ``tandem profile`` measures the real engine on this host (``measure``); a
roofline from a GPU's FLOP/s and memory bandwidth and a model's shape (``roofline``, with
presets); or a file written by hand. Every field is checked on load, and a bad one is named.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1


class ProfileError(ValueError):
    """A profile field is missing or wrong; ``field`` is its dotted path."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path


@dataclass(slots=True)
class PrefillCost:
    base_ms: float = 0.0
    ms_per_token: float = 0.0
    ms_per_token2: float = 0.0

    def ms(self, tokens):
        return self.base_ms + self.ms_per_token * tokens + self.ms_per_token2 * tokens * tokens


@dataclass(slots=True)
class DecodeCost:
    base_ms: float = 0.0
    ms_per_seq: float = 0.0
    ms_per_ctx_token: float = 0.0

    def ms(self, batch, context_tokens):
        return self.base_ms + self.ms_per_seq * batch + self.ms_per_ctx_token * context_tokens


@dataclass(slots=True)
class HandoffCost:
    base_ms: float = 0.0
    gb_per_s: float = 1.0

    def ms(self, nbytes):
        return self.base_ms + nbytes / (self.gb_per_s * 1e6)


@dataclass(slots=True)
class Overhead:
    """What serving adds to the engine's own costs (measured through a running cluster):
    ``ttft_ms`` to every first token (router, worker calls, streaming), ``step_factor`` on
    every step a worker runs (its runtime beside the engine thread, the host it shares)."""
    ttft_ms: float = 0.0
    step_factor: float = 1.0
    # CPU the router (and a client on the same host) spend per streamed token, in ms: what
    # shares a host's cores with the workers (``simulate(host_cores=...)``).
    cpu_ms_per_token: float = 0.0


@dataclass(slots=True)
class Limits:
    max_batch: int = 256
    kv_tokens: int = 1 << 20


@dataclass(slots=True)
class Profile:
    name: str
    hardware: str
    source: str                         # "measured", "roofline" or "manual"
    kv_bytes_per_token: int
    threads_per_worker: int = 1
    gpus_per_worker: int = 0
    prefill: PrefillCost = field(default_factory=PrefillCost)
    decode: DecodeCost = field(default_factory=DecodeCost)
    handoff: HandoffCost = field(default_factory=HandoffCost)
    limits: Limits = field(default_factory=Limits)
    overhead: Overhead = field(default_factory=Overhead)
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **asdict(self)}, indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ProfileError("profile", f"cannot read {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ProfileError("profile", f"{path} is not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        if not isinstance(data, dict):
            raise ProfileError("profile", "must be a JSON object")
        if data.get("version") != VERSION:
            raise ProfileError("version", f"must be {VERSION}, got {data.get('version')!r}")
        known = {"version", "name", "hardware", "source", "kv_bytes_per_token", "threads_per_worker",
                 "gpus_per_worker", "prefill", "decode", "handoff", "limits", "overhead", "notes"}
        for key in data:
            if key not in known:
                raise ProfileError(key, "unknown field")
        for key in ("name", "hardware", "source"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ProfileError(key, "must be a non-empty string")
        sections = {}
        for key, kind in (("prefill", PrefillCost), ("decode", DecodeCost), ("handoff", HandoffCost),
                          ("limits", Limits), ("overhead", Overhead)):
            sections[key] = _section(key, kind, data.get(key, {}))
        if sections["overhead"].step_factor <= 0:
            raise ProfileError("overhead.step_factor", "must be > 0")
        if sections["handoff"].gb_per_s <= 0:
            raise ProfileError("handoff.gb_per_s", "must be > 0")
        for key in ("max_batch", "kv_tokens"):
            if getattr(sections["limits"], key) < 1:
                raise ProfileError(f"limits.{key}", "must be >= 1")
        ints = {k: _number(k, data.get(k, d), integer=True) for k, d in
                (("kv_bytes_per_token", None), ("threads_per_worker", 1), ("gpus_per_worker", 0))}
        if ints["kv_bytes_per_token"] < 1:
            raise ProfileError("kv_bytes_per_token", "must be >= 1")
        notes = data.get("notes", {})
        if not isinstance(notes, dict):
            raise ProfileError("notes", "must be an object")
        return cls(data["name"], data["hardware"], data["source"], ints["kv_bytes_per_token"],
                   ints["threads_per_worker"], ints["gpus_per_worker"], notes=notes, **sections)


def _number(path: str, value: Any, integer: bool = False) -> float:
    if value is None:
        raise ProfileError(path, "is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ProfileError(path, f"must be a finite number >= 0, got {value!r}")
    if integer:
        if value != int(value):
            raise ProfileError(path, f"must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _section(name: str, kind, data: Any):
    if not isinstance(data, dict):
        raise ProfileError(name, "must be an object")
    fields_ = kind.__dataclass_fields__
    for key in data:
        if key not in fields_:
            raise ProfileError(f"{name}.{key}", "unknown field")
    values = {k: _number(f"{name}.{k}", data.get(k, f.default), integer=f.type == "int")
              for k, f in fields_.items()}
    return kind(**values)


# -- roofline --------------------------------------------------------------------------------
@dataclass(slots=True)
class ModelShape:
    params: float                        # parameters
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    bytes_per_param: float = 2.0         # bf16
    bytes_per_kv: float = 2.0


@dataclass(slots=True)
class Accelerator:
    flops: float                         # dense FLOP/s of one device at the model's dtype
    mem_bytes_per_s: float
    mem_bytes: float
    link_gb_per_s: float                 # between workers (the KV hand-off)


MODELS = {"llama-70b": ModelShape(70e9, 80, 8192, 8, 128), "llama-8b": ModelShape(8e9, 32, 4096, 8, 128)}
ACCELERATORS = {"h100": Accelerator(989e12, 3.35e12, 80e9, 50.0), "a100": Accelerator(312e12, 2.0e12, 80e9, 25.0)}


def roofline(model: str | ModelShape, accelerator: str | Accelerator, gpus_per_worker: int,
             mfu: float = 0.5, mbu: float = 0.7, name: str | None = None) -> Profile:
    """A profile from first principles: prefill is compute bound (2 FLOPs per parameter per
    token, plus causal attention 2 x layers x hidden x n^2 at ``mfu`` of peak), a decode step
    reads the weights once and each sequence's KV (at ``mbu`` of the memory bandwidth), the
    hand-off moves the KV over the link. Tensor parallel over ``gpus_per_worker`` devices."""
    m = MODELS[model] if isinstance(model, str) else model
    a = ACCELERATORS[accelerator] if isinstance(accelerator, str) else accelerator
    if gpus_per_worker < 1:
        raise ProfileError("gpus_per_worker", "must be >= 1 for a roofline")
    flops = a.flops * gpus_per_worker * mfu
    bw = a.mem_bytes_per_s * gpus_per_worker * mbu
    kv_per_token = int(2 * m.layers * m.kv_heads * m.head_dim * m.bytes_per_kv)
    weights = m.params * m.bytes_per_param
    kv_room = max(0.0, a.mem_bytes * gpus_per_worker * 0.9 - weights)
    return Profile(
        name or f"{model}-{accelerator}-tp{gpus_per_worker}", f"{accelerator} x{gpus_per_worker}", "roofline",
        kv_per_token, 0, gpus_per_worker,
        PrefillCost(base_ms=2.0, ms_per_token=2 * m.params / flops * 1e3,
                    ms_per_token2=2 * m.layers * m.hidden / flops * 1e3),
        DecodeCost(base_ms=weights / bw * 1e3 + 1.0, ms_per_seq=2 * m.params / flops * 1e3,
                   ms_per_ctx_token=kv_per_token / bw * 1e3),
        HandoffCost(base_ms=1.0, gb_per_s=a.link_gb_per_s),
        Limits(max_batch=512, kv_tokens=int(kv_room / kv_per_token)),
        notes={"mfu": mfu, "mbu": mbu, "model": asdict(m), "accelerator": asdict(a)})
