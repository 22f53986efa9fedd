"""The offline API (vLLM's names): ``LLM(...).generate(prompts, SamplingParams(...))``."""
from __future__ import annotations

import itertools
import logging
import time

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


class LLM:
    def __init__(self, model: str = "stories260K", dtype: str | None = None, device: str = "cpu",
                 block_size: int = 16, max_num_seqs: int = 256, **kwargs):
        self.config = EngineConfig(model=model, dtype=dtype, device=device, block_size=block_size,
                                   max_num_seqs=max_num_seqs, **kwargs)
        self.engine = LLMEngine(self.config)
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    def generate(self, prompts: list[str] | list[list[int]] | str,
                 sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 ) -> list[RequestOutput]:
        """Generate for every prompt; outputs come back in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        if not prompts:
            raise ValueError("prompts must not be empty")
        params = sampling_params or SamplingParams()
        plist = params if isinstance(params, list) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"got {len(plist)} sampling params for {len(prompts)} prompts")
        token_lists = [self._tokens(p) for p in prompts]
        ids = [f"offline-{next(self._ids)}" for _ in prompts]
        for rid, toks, sp in zip(ids, token_lists, plist):   # validate all before starting any
            self.engine._validate_prompt(toks, sp)
        for rid, toks, sp in zip(ids, token_lists, plist):
            self.engine.add_request(rid, toks, sp)
        final: dict[str, RequestOutput] = {}
        t0, last_log = time.monotonic(), time.monotonic()
        while len(final) < len(ids):
            for out in self.engine.step():
                if out.finished:
                    final[out.request_id] = out
            if time.monotonic() - last_log > 5:
                last_log = time.monotonic()
                logger.info("generate: %d/%d requests done (%.0fs)", len(final), len(ids), last_log - t0)
        return [final[rid] for rid in ids]

    def _tokens(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt must not be empty")
            return self.tokenizer.encode(prompt)
        if not isinstance(prompt, list):
            raise ValueError(f"a prompt must be a string or a list of token ids, got {type(prompt).__name__}")
        return list(prompt)
