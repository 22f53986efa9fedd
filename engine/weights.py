"""Checkpoint discovery and weight loading (safetensors only; never pickle).

HF tensors are mapped onto the engine's fused layout: q/k/v become one ``qkv`` matrix and
gate/up one ``gate_up`` matrix, so each layer runs two big matmuls instead of five.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from engine.errors import ModelLoadError

logger = logging.getLogger(__name__)

_SAMPLE = 1 << 20


def safetensor_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"{index}: malformed shard index ({exc})") from exc
        files = sorted({model_dir / name for name in weight_map.values()})
        for f in files:
            if not f.exists():
                raise ModelLoadError(f"missing weight shard: {f}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in {model_dir}")
    return files


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for name in fh.keys():
                    yield name, fh.get_tensor(name)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{f}: cannot read safetensors ({exc})") from exc


def weights_fingerprint(files: list[Path]) -> bytes:
    """Identity of the weights without reading them all: header, size and sampled bytes."""
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f.name.encode() + size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            for off in (0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)):
                fh.seek(off)
                h.update(fh.read(_SAMPLE))
    return h.digest()


def hf_to_engine_name(name: str) -> tuple[str, int | None, str | None]:
    """Map an HF tensor name to (engine param name, layer, shard-slot) or ('', None, None) to skip."""
    name = name.removeprefix("model.")
    if name.startswith("layers."):
        _, idx, rest = name.split(".", 2)
        table = {
            "self_attn.q_proj.weight": ("qkv.weight", "q"), "self_attn.k_proj.weight": ("qkv.weight", "k"),
            "self_attn.v_proj.weight": ("qkv.weight", "v"), "self_attn.q_proj.bias": ("qkv.bias", "q"),
            "self_attn.k_proj.bias": ("qkv.bias", "k"), "self_attn.v_proj.bias": ("qkv.bias", "v"),
            "self_attn.o_proj.weight": ("o_proj.weight", None),
            "mlp.gate_proj.weight": ("gate_up.weight", "gate"), "mlp.up_proj.weight": ("gate_up.weight", "up"),
            "mlp.down_proj.weight": ("down.weight", None),
            "input_layernorm.weight": ("input_norm.weight", None),
            "post_attention_layernorm.weight": ("post_norm.weight", None),
        }
        if rest in table:
            pname, slot = table[rest]
            return f"layers.{idx}.{pname}", int(idx), slot
        if rest.endswith("rotary_emb.inv_freq"):
            return "", None, None
        return f"layers.{idx}.{rest}", int(idx), None
    if name == "embed_tokens.weight":
        return "embed.weight", None, None
    if name == "norm.weight":
        return "norm.weight", None, None
    if name == "lm_head.weight":
        return "lm_head.weight", None, None
    return name, None, None


def load_state(model: torch.nn.Module, files: list[Path], dtype: torch.dtype) -> None:
    """Copy checkpoint tensors into ``model`` (fused layout), checking every parameter is set."""
    params = dict(model.named_parameters())
    pending: dict[str, dict[str, torch.Tensor]] = {}
    loaded: set[str] = set()
    slots_of = {"qkv.weight": ("q", "k", "v"), "qkv.bias": ("q", "k", "v"), "gate_up.weight": ("gate", "up")}
    for hf_name, tensor in iter_tensors(files):
        pname, _, slot = hf_to_engine_name(hf_name)
        if not pname:
            continue
        if pname == "lm_head.weight" and pname not in params:
            continue   # tied embeddings: some checkpoints still store the (identical) head
        if pname not in params:
            raise ModelLoadError(f"checkpoint tensor '{hf_name}' has no place in the model "
                                 "(unsupported architecture variant?)")
        if slot is not None:
            pending.setdefault(pname, {})[slot] = tensor
            parts = pending[pname]
            order = slots_of[pname.split(".", 2)[2]]
            if all(s in parts for s in order):
                tensor = torch.cat([parts[s] for s in order], dim=0)
                del pending[pname]
            else:
                continue
        _copy(params[pname], tensor, hf_name, dtype)
        loaded.add(pname)
    if "lm_head.weight" in params and "lm_head.weight" not in loaded:
        raise ModelLoadError("checkpoint has no 'lm_head.weight' and tie_word_embeddings is false")
    missing = [n for n in params if n not in loaded and n != "lm_head.weight"]
    if pending or missing:
        names = sorted(set(missing) | set(pending))
        raise ModelLoadError(f"checkpoint is missing tensors for: {names[:8]}")


def _copy(param: torch.nn.Parameter, tensor: torch.Tensor, hf_name: str, dtype: torch.dtype) -> None:
    if tuple(param.shape) != tuple(tensor.shape):
        raise ModelLoadError(f"tensor '{hf_name}' has shape {tuple(tensor.shape)}, "
                             f"the config implies {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(tensor.to(dtype))
