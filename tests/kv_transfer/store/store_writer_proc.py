"""Run in a separate process by the tests: prefill prompts with a store, write back, exit.

argv: redis_url chunk_size salt json(list of prompts as token-id lists). Prints one JSON
line per prompt: {"token_ids": [...first output ids...], "decision": ...}.
"""
from __future__ import annotations

import json
import sys

from engine import LLM, SamplingParams
from kv_transfer.store import PrefixCacheClient, StoreConfig
from kv_transfer.store.prefill_flow import decode_to_end, prefill_with_store


def main() -> None:
    url, chunk, salt, prompts = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    llm = LLM(model="stories260K", enable_prefix_caching=False, seed=0)
    params = SamplingParams(max_tokens=16, temperature=0.0)
    config = StoreConfig(url=url, chunk_size=chunk, local_cpu_bytes=16 << 20, calibrate=False)
    with PrefixCacheClient.open(config, llm.engine.kv_layout) as client:
        for i, prompt in enumerate(prompts):
            out = prefill_with_store(llm.engine, client, f"w{i}", prompt, params, salt, 1.0)
            final = decode_to_end(llm.engine, out.seq_kv)
            print(json.dumps({"token_ids": final.token_ids, "decision": out.plan.decision}), flush=True)
        if not client.flush(30):
            sys.exit("write-back did not finish")


if __name__ == "__main__":
    main()
