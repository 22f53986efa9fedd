"""Map a CPU KV cache's pages in the background, before requests touch them.

The KV cache comes from calloc (``model_runner._zeros``): allocating it costs no time and no
memory until used. But the first write to each page is a page fault, and on a fresh VM guest
the first touch of guest memory is slower still (measured on this project's 2-core VMs: 2.2 s
for the first GiB a process touched, 0.05 s for memory touched before). Every prompt that
landed on never-used blocks paid it: a 512-token llama-20m prefill on one core took 64.8 ms
on a fresh cache against 58.3 ms on a touched one (medians of 16, interleaved). A daemon
thread asks the kernel to map the whole cache writable (``madvise(MADV_POPULATE_WRITE)``,
Linux 5.14+), a chunk at a time, without changing a byte, so it is safe while the engine is
already writing the cache; it holds no lock and releases the GIL (ctypes). The reservation
becomes resident memory, as a production server's KV reservation should be (no surprise
out-of-memory mid-serving). ``TANDEM_KV_PREFAULT=0`` turns it off; where the call is not
supported (not Linux, an older kernel) it logs why and stops.
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time

import torch

logger = logging.getLogger(__name__)

ENV_SWITCH = "TANDEM_KV_PREFAULT"
MADV_POPULATE_WRITE = 23
CHUNK_BYTES = 64 << 20


def start(cache: torch.Tensor, name: str = "kv") -> threading.Thread | None:
    """Start mapping ``cache``'s pages (a contiguous CPU tensor) on a daemon thread; None
    when switched off or not on Linux. The thread keeps ``cache`` alive until it is done."""
    if os.environ.get(ENV_SWITCH) == "0" or not sys.platform.startswith("linux") \
            or cache.device.type != "cpu" or not cache.is_contiguous():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    page = os.sysconf("SC_PAGE_SIZE")
    first = -(-cache.data_ptr() // page) * page
    end = (cache.data_ptr() + cache.numel() * cache.element_size()) // page * page

    def run() -> None:
        began, addr = time.perf_counter(), first
        while addr < end:
            size = min(CHUNK_BYTES, end - addr)
            if madvise(addr, size, MADV_POPULATE_WRITE) != 0:
                logger.info("%s cache: not prefaulted (%s)", name, os.strerror(ctypes.get_errno()))
                return
            addr += size
        logger.info("%s cache: %.0f MiB mapped in %.2f s", name, (end - first) / 2**20,
                    time.perf_counter() - began)

    thread = threading.Thread(target=lambda: (run(), cache), name=f"{name}-prefault", daemon=True)
    thread.start()
    return thread
