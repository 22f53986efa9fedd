"""Load figures a worker reports about its engine (read on the engine thread)."""
from __future__ import annotations

from engine.llm_engine import LLMEngine


def load_figures(engine: LLMEngine, busy_s: float, wall_s: float) -> dict:
    sched = engine.scheduler
    tokens = engine.stats["generated_tokens"]
    return {
        "queue_depth": len(sched.waiting),
        "running": len(sched.running),
        "free_kv_blocks": engine.pool.num_free,
        "total_kv_blocks": engine.pool.num_blocks,
        "tokens_per_s": tokens / wall_s if wall_s > 0 else 0.0,
        "busy_fraction": busy_s / wall_s if wall_s > 0 else 0.0,
        "cached_chunk_hashes": list(engine.pool.by_hash),
    }
