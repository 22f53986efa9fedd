"""Tandem's model runtime, shared by the prefill and decode workers.

The names below load on first use: ``import engine.config`` or ``engine.model_info`` stays
torch-free, so the router can read a model's config and tokenizer without the runtime.
"""
from tandem_common.lazy import lazy_exports

_EXPORTS = {
    "EngineConfig": "engine.config", "ModelConfig": "engine.config",
    "EngineError": "engine.errors", "ModelLoadError": "engine.errors",
    "UnsupportedModelError": "engine.errors",
    "KVLayout": "engine.kv_export", "SequenceKV": "engine.kv_export",
    "LLM": "engine.llm", "LLMEngine": "engine.llm_engine",
    "RequestOutput": "engine.outputs", "SamplingParams": "engine.sampling_params",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
