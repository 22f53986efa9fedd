"""Run Python code in a process where ``import torch`` fails: proves the router side never
loads the model runtime (tests/architecture/test_layering.py, tests/cluster/test_serve_cli.py)."""
from __future__ import annotations

import sys

BLOCK_TORCH = """
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not importable in this process")
sys.meta_path.insert(0, BlockTorch())
"""


def python_without_torch(code: str) -> list[str]:
    """A command line running ``code`` under a Python that cannot import torch."""
    return [sys.executable, "-c", BLOCK_TORCH + code]
