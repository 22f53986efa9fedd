"""engine.prefault: the KV cache's pages get mapped in the background, and not a byte changes,
even while another thread writes the cache."""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np
import torch

from engine import prefault


def _resident_fraction(t: torch.Tensor) -> float:
    """The share of ``t``'s whole pages the kernel has mapped (mincore), whatever else the
    process allocates or frees meanwhile."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = os.sysconf("SC_PAGE_SIZE")
    first = -(-t.data_ptr() // page) * page
    end = (t.data_ptr() + t.numel() * t.element_size()) // page * page
    vec = (ctypes.c_ubyte * ((end - first) // page))()
    assert libc.mincore(first, end - first, vec) == 0, os.strerror(ctypes.get_errno())
    return sum(b & 1 for b in vec) / len(vec)


def _calloc(n: int) -> torch.Tensor:
    return torch.from_numpy(np.zeros(n, dtype=np.int32)).view(torch.float32)


def test_the_cache_becomes_resident_with_its_contents_unchanged():
    cache = _calloc(64 << 20 >> 2)                        # 64 MiB, no page mapped yet
    cache[:1000] = torch.arange(1000, dtype=torch.float32)
    cache[-7:] = 5.0
    assert _resident_fraction(cache) < 0.1
    thread = prefault.start(cache, "test")
    assert thread is not None
    thread.join(60)
    assert not thread.is_alive()
    assert _resident_fraction(cache) == 1.0
    assert torch.equal(cache[:1000], torch.arange(1000, dtype=torch.float32))
    assert torch.equal(cache[-7:], torch.full((7,), 5.0))
    assert not cache[1000:-7].any()


def test_writes_made_while_it_runs_are_all_kept():
    cache = _calloc(96 << 20 >> 2)
    rows = cache.view(-1, 1024)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < rows.shape[0]:
            rows[i] = float(i)
            i += 97
    w = threading.Thread(target=writer)
    w.start()
    thread = prefault.start(cache, "test")
    thread.join(60)
    stop.set()
    w.join(60)
    written = torch.arange(0, rows.shape[0], 97)
    got = rows[:, 0]
    done = got[written] != 0
    assert torch.equal(got[written][done], written[done].float())   # nothing written was lost
    untouched = torch.ones(rows.shape[0], dtype=torch.bool)
    untouched[written] = False
    assert not rows[untouched].any()


def test_the_switch_and_unsupported_tensors_start_nothing(monkeypatch):
    assert prefault.start(_calloc(1024).view(32, 32).t(), "test") is None     # not contiguous
    monkeypatch.setenv(prefault.ENV_SWITCH, "0")
    assert prefault.start(_calloc(1024), "test") is None


def test_an_engine_maps_its_kv_cache_at_start_and_still_generates():
    from engine import LLM
    from engine_helpers import greedy
    llm = LLM("stories260K")
    for t in threading.enumerate():
        if t.name.endswith("-prefault"):
            t.join(60)
    assert _resident_fraction(llm.engine.runner.kv_cache) == 1.0
    out = llm.generate([[1, 5, 6, 7]], greedy(8, ignore_eos=True))[0]
    assert len(out.token_ids) == 8
