"""The real server for the load-test harness's tests: a Tandem router over a real
stories260K engine, serving gRPC and its OpenAI-compatible HTTP API on free loopback ports."""
from __future__ import annotations

import pytest
from loadtest_routers import make_router

from router.config import AdmissionConfig


@pytest.fixture(scope="session")
def router():
    # The harness's tests count every request they send; at their rates (40 req/s of replayed
    # prompts on two shared cores) SLO admission may rightly refuse some, which is not what
    # they test (tests/router/test_admission.py does). The hard in-flight bound stays.
    with make_router(admission=AdmissionConfig(enabled=False), http_port=0) as r:
        yield r


@pytest.fixture(scope="session")
def tandem_url(router) -> str:
    return f"tandem://{router.target}"


@pytest.fixture(scope="session")
def openai_url(router) -> str:
    """The same router's OpenAI-compatible HTTP front door (router/http)."""
    return f"http://127.0.0.1:{router.server.http_port}"
