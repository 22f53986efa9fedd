"""A real router over a stories260K engine, for the load-test tests (importable by name)."""
from __future__ import annotations

from router.config import RouterConfig
from router.backends.local import LocalBackend
from router.testing import BackgroundRouter


def make_router(**config) -> BackgroundRouter:
    from engine import LLM
    return BackgroundRouter(LocalBackend(LLM(model="stories260K", max_num_seqs=8)),
                            RouterConfig(grpc_port=0, **config))
