"""Builds a ready model from a name: the embedded default, a checkpoint directory, or a preset."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from engine.config import EngineConfig, ModelConfig, fingerprint, normalize_dtype
from engine.model import CausalLM
from engine.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer
from engine.model_info import read_model_config
from engine.weights import load_state, safetensor_files, weights_fingerprint

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(slots=True)
class LoadedModel:
    model: CausalLM
    config: ModelConfig
    tokenizer: Tokenizer
    dtype: torch.dtype
    device: torch.device
    fingerprint: str
    name: str


def load_model(config: EngineConfig) -> LoadedModel:
    t0 = time.perf_counter()
    mcfg, model_dir = read_model_config(config.model)
    dtype = _DTYPES[normalize_dtype(config.dtype or mcfg.torch_dtype)]
    device = torch.device(config.resolved_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but CUDA is not available")
    max_pos = min(config.max_model_len or mcfg.max_position_embeddings, mcfg.max_position_embeddings)
    model = CausalLM(mcfg, max_pos)
    if model_dir is None:
        model.init_random(config.seed)
        tokenizer: Tokenizer = ByteTokenizer(mcfg.vocab_size)
        fp = fingerprint(mcfg.fingerprint_payload(), b"random", str(config.seed).encode())
    else:
        files = safetensor_files(model_dir)
        load_state(model, files, torch.float32 if dtype == torch.float32 else dtype)
        eos = mcfg.eos_token_ids[0] if mcfg.eos_token_ids else None
        tokenizer = HFTokenizer(model_dir, mcfg.bos_token_id, eos)
        fp = fingerprint(mcfg.fingerprint_payload(), weights_fingerprint(files))
    model = model.to(device=device, dtype=dtype).eval()
    model.rope.to_device(device)
    logger.info("loaded %s (%s, %.1fM params, %s on %s) in %.2fs", config.model, mcfg.architecture,
                mcfg.num_params / 1e6, str(dtype).removeprefix("torch."), device, time.perf_counter() - t0)
    return LoadedModel(model, mcfg, tokenizer, dtype, device, fp, config.model)
