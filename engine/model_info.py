"""What the router needs to know of a model without loading it: its config and tokenizer.

Torch-free: the router process reads these; the workers' loader (engine.loader) reads the
same config through ``read_model_config``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from engine.config import ModelConfig
from engine.errors import ModelLoadError
from engine.presets import PRESETS, preset_config
from engine.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer


def resolve_model_dir(model: str) -> Path | None:
    """A directory for ``model``: the embedded default by name, or a path; None if not a path."""
    if model == "stories260K":
        return Path(__file__).parent / "models" / "stories260K"
    p = Path(os.path.expanduser(model))
    if p.exists() or os.sep in model or model.startswith("."):
        if not p.is_dir():
            raise ModelLoadError(f"model directory not found: {p}")
        return p
    return None


def read_model_config(model: str) -> tuple[ModelConfig, Path | None]:
    """The parsed config for ``model`` and its directory (None for presets)."""
    model_dir = resolve_model_dir(model)
    if model_dir is None:
        if model not in PRESETS:
            raise ModelLoadError(f"unknown model {model!r}: not a directory, 'stories260K', "
                                 f"or a preset ({', '.join(sorted(PRESETS))})")
        return ModelConfig.from_hf(preset_config(model)), None
    path = model_dir / "config.json"
    if not path.exists():
        raise ModelLoadError(f"missing model config file: {path}")
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    return ModelConfig.from_hf(raw), model_dir


def load_tokenizer(model: str) -> tuple[Tokenizer, ModelConfig]:
    """The tokenizer and config of ``model`` without loading any weights (for the router)."""
    mcfg, model_dir = read_model_config(model)
    if model_dir is None:
        return ByteTokenizer(mcfg.vocab_size), mcfg
    eos = mcfg.eos_token_ids[0] if mcfg.eos_token_ids else None
    return HFTokenizer(model_dir, mcfg.bos_token_id, eos), mcfg
