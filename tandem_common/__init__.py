"""Torch-free types every layer may import: block hashing, worker load reports, config schema.

This package is the leaf of the layer graph (docs/architecture.md): it imports nothing
from the rest of Tandem, and nothing heavy (no torch, no Ray), so the router process can
use it without loading a model runtime.
"""
