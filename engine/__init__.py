"""Tandem's model runtime, shared by the prefill and decode workers."""
from engine.config import EngineConfig, ModelConfig
from engine.errors import EngineError, ModelLoadError, UnsupportedModelError
from engine.kv_export import KVLayout, SequenceKV
from engine.llm import LLM
from engine.llm_engine import LLMEngine
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams

__all__ = ["LLM", "LLMEngine", "SamplingParams", "RequestOutput", "EngineConfig", "ModelConfig",
           "KVLayout", "SequenceKV", "EngineError", "ModelLoadError", "UnsupportedModelError"]
