"""Import LMCache safely and undo the process-wide state it changes.

Pitfalls handled here (see shared/notes/lmcache.md):
- usage telemetry is on by default and calls the internet: forced off *before* import;
- creating an engine calls ``multiprocessing.set_start_method("spawn", force=True)`` and
  may disable the garbage collector: ``preserved_process_state()`` restores both;
- LMCache keeps a process-wide ``PinMonitor`` thread: stopped when our last engine closes.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import multiprocessing
import os
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType

logger = logging.getLogger(__name__)

LMCACHE_VERSION = "0.5.6"
_live_engines = 0
_lock = threading.Lock()


def force_telemetry_off() -> None:
    """Set the opt-out variables LMCache reads; harmless if it is never imported."""
    os.environ["LMCACHE_TRACK_USAGE"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    # LMCache logs every store and retrieve at INFO; our own logs carry what matters.
    os.environ.setdefault("LMCACHE_LOG_LEVEL", "WARNING")
    # Each LMCache logger attaches an OpenTelemetry handler that warns it is deprecated
    # (once per logger, ~100 times); it exports nothing without a configured provider.
    warnings.filterwarnings("ignore", message=r"`LoggingHandler` in `opentelemetry-sdk`",
                            category=DeprecationWarning)


def import_lmcache() -> ModuleType:
    """Import lmcache with telemetry off and check the pinned version."""
    force_telemetry_off()
    with preserved_process_state():
        lmcache = importlib.import_module("lmcache")
        importlib.import_module("lmcache.v1.cache_engine")
    version = getattr(importlib.import_module("lmcache._version"), "__version__", "?")
    if version != LMCACHE_VERSION:
        logger.warning("lmcache %s is installed; Tandem is pinned to %s", version, LMCACHE_VERSION)
    return lmcache


@contextlib.contextmanager
def preserved_process_state() -> Iterator[None]:
    """Restore the multiprocessing start method and GC switch LMCache may change."""
    method = multiprocessing.get_start_method(allow_none=True)
    gc_enabled = gc.isenabled()
    try:
        yield
    finally:
        if multiprocessing.get_start_method(allow_none=True) != method:
            # None resets to "not chosen yet", exactly the state before.
            multiprocessing.set_start_method(method, force=True)
        if gc_enabled and not gc.isenabled():
            gc.enable()


def engine_opened() -> None:
    global _live_engines
    with _lock:
        _live_engines += 1


def engine_closed() -> None:
    """Stop LMCache's process-wide monitor thread once no engine of ours is left."""
    global _live_engines
    with _lock:
        _live_engines = max(0, _live_engines - 1)
        if _live_engines:
            return
    try:
        from lmcache.v1.pin_monitor import PinMonitor
    except ImportError:
        return
    monitor = PinMonitor._instance
    if monitor is not None:
        PinMonitor._instance = None
        try:
            monitor.stop(timeout=2.0)
        except Exception:  # a failed stop leaves a daemon thread, not a wrong answer
            logger.warning("could not stop LMCache's PinMonitor thread", exc_info=True)
