"""A real router (grpc.aio on a free loopback port) over a real stories260K engine."""
from __future__ import annotations

import grpc
import pytest
from engine_hold import engine_held as hold_engine
from waiting import wait_until as _wait

from router.config import RouterConfig
from protos.tandem.v1 import tandem_service_pb2_grpc
from router.backends.local import LocalBackend
from router.testing import BackgroundRouter


def make_llm():
    from engine import LLM
    return LLM(model="stories260K", max_num_seqs=8)


@pytest.fixture
def new_llm():
    """A factory of fresh stories260K engines (one per backend that a test owns)."""
    return make_llm


@pytest.fixture(scope="module")
def router():
    with BackgroundRouter(LocalBackend(make_llm()), RouterConfig(grpc_port=0)) as r:
        yield r


@pytest.fixture
def stub(router):
    with grpc.insecure_channel(router.target) as channel:
        yield tandem_service_pb2_grpc.TandemStub(channel)


@pytest.fixture
def on_engine(router):
    """Run ``fn(engine)`` on the router's engine thread and return the result."""
    def call(fn):
        return router.call(router.backend.run_on_engine(fn))
    return call


@pytest.fixture
def engine_held(router):
    """``with engine_held():`` holds the engine thread (tests/engine_hold.py)."""
    return lambda: hold_engine(router)


@pytest.fixture
def wait_until():
    return _wait


@pytest.fixture
def engine_idle(router, on_engine):
    """Waits (at the start and when called) until the engine holds no request and every KV
    block is free again; returns the total block count."""
    total = on_engine(lambda e: e.pool.num_blocks)

    def wait_idle():
        _wait(lambda: on_engine(lambda e: (e.free_block_count(), len(e.requests))) == (total, 0),
              what="engine idle with every KV block free")
        return total
    wait_idle()
    return wait_idle
