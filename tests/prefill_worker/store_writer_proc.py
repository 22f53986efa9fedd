"""Run in a separate process by the tests: the prefill worker prefills prompts with a store,
writes back, and exits.

argv: redis_url chunk_size salt json(list of prompts as token-id lists). Prints one JSON
line per prompt: {"token_ids": [...output ids...], "decision": ...}.
"""
from __future__ import annotations

import json
import sys

from engine import SamplingParams
from kv_transfer.store import StoreConfig
from prefill_worker.testing import InProcessPrefill


def main() -> None:
    url, chunk, salt, prompts = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    params = SamplingParams(max_tokens=16, temperature=0.0)
    config = StoreConfig(url=url, chunk_size=chunk, local_cpu_bytes=16 << 20, calibrate=False)
    with InProcessPrefill(config) as prefill:
        for i, prompt in enumerate(prompts):
            result, token_ids = prefill.run(f"w{i}", prompt, params, salt)
            print(json.dumps({"token_ids": token_ids, "decision": result.store.decision}), flush=True)
        if not prefill.client.flush(30):
            sys.exit("write-back did not finish")


if __name__ == "__main__":
    main()
