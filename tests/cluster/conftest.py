"""Shared fixtures of the cluster tests: each module brings its own ``cluster``."""
from __future__ import annotations

import pytest

from tandem_client import TandemClient


@pytest.fixture(scope="module")
def client(cluster):
    """An SDK client of the module's cluster."""
    c = TandemClient(cluster.target, timeout=120)
    yield c
    c.close()
