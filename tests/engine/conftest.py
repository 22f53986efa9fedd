"""Shared fixtures of the engine tests: small real models and HF references."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine import LLM
from engine_helpers import FAMILIES
from hf_checkpoints import STORIES_DIR, random_hf_model, save_checkpoint


@pytest.fixture(scope="session")
def family_checkpoint(tmp_path_factory):
    """family name -> (checkpoint dir, HF float32 reference model), built once per session."""
    cache: dict[str, tuple[Path, object]] = {}

    def build(family: str):
        if family not in cache:
            preset, overrides = FAMILIES[family]
            hf = random_hf_model(preset, seed=1234, **overrides)
            out = save_checkpoint(hf, tmp_path_factory.mktemp(family))
            cache[family] = (out, hf)
        return cache[family]

    return build


@pytest.fixture
def stories() -> LLM:
    """A fresh engine on the embedded stories260K model (loads in ~20 ms)."""
    return LLM("stories260K", dtype="float32")


@pytest.fixture
def stories_copy(tmp_path) -> Path:
    """A writable copy of the stories260K checkpoint directory."""
    out = tmp_path / "stories"
    shutil.copytree(STORIES_DIR, out)
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """One torch thread while these tests run: on a shared 2-core box every parallel region
    of a tiny op waits for a busy core (milliseconds each), which only makes tests slow."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
