"""A real router over a real stories260K engine for the SDK tests."""
from __future__ import annotations

import pytest
from engine_hold import engine_held as hold_engine
from waiting import wait_until as _wait

from router.config import AdmissionConfig, RouterConfig
from router.backends.local import LocalBackend
from router.testing import BackgroundRouter


@pytest.fixture(scope="module")
def llm():
    from engine import LLM
    return LLM(model="stories260K", max_num_seqs=8)


@pytest.fixture(scope="module")
def router(llm):
    # SLO admission off: the SDK tests send concurrent requests and expect each to be
    # served; a loaded host could make admission refuse some (tests/router tests that).
    with BackgroundRouter(LocalBackend(llm), RouterConfig(
            grpc_port=0, admission=AdmissionConfig(enabled=False))) as r:
        yield r


@pytest.fixture
def free_blocks(router):
    """Free KV blocks of the router's engine, read on the engine thread."""
    def read():
        return router.call(router.backend.run_on_engine(lambda e: e.free_block_count()))
    return read


@pytest.fixture
def engine_held(router):
    """``with engine_held():`` holds the engine thread (tests/engine_hold.py)."""
    return lambda: hold_engine(router)


@pytest.fixture
def engine_idle(router):
    """Waits (at the start and when called) until the engine holds no request and every KV
    block is free again; returns the total block count."""
    def state():
        return router.call(router.backend.run_on_engine(
            lambda e: (e.free_block_count(), len(e.requests), e.pool.num_blocks)))

    def wait_idle():
        _wait(lambda: (lambda f, n, t: f == t and n == 0)(*state()),
              what="engine idle with every KV block free")
        return state()[2]
    wait_idle()
    return wait_idle
