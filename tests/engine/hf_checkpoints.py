"""Seeded random HF checkpoints of the tiny presets, written the way HF writes them.

Weights are drawn wider than HF's 0.02 init so that next-token distributions are sharp:
greedy decoding then compares the implementations, not floating-point tie-breaking.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from benchmarks.hf_reference import hf_config
from engine.config import ModelConfig
from engine.presets import preset_config

STORIES_DIR = Path(__file__).resolve().parents[2] / "engine" / "models" / "stories260K"


def random_hf_model(preset: str, seed: int, **overrides):
    """An HF model of ``preset``'s shape with seeded, deliberately non-trivial weights."""
    import transformers

    cfg = ModelConfig.from_hf({**preset_config(preset), **overrides})
    hf = transformers.AutoModelForCausalLM.from_config(hf_config(cfg), attn_implementation="eager",
                                                       dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)        # non-unit, so a skipped norm weight shows
            elif name.endswith("bias"):
                p.copy_(0.3 * noise)
            else:
                p.copy_(noise * (2.0 / p.shape[-1] ** 0.5))
    return hf.eval()


def save_checkpoint(hf, out_dir: Path, **save_kwargs) -> Path:
    """``save_pretrained`` plus a tokenizer (the tiny presets share stories260K's 512 vocab)."""
    hf.save_pretrained(out_dir, **save_kwargs)
    shutil.copy(STORIES_DIR / "tokenizer.json", out_dir / "tokenizer.json")
    return out_dir


def edit_config(model_dir: Path, **changes) -> None:
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))
