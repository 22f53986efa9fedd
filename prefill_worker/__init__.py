"""The prefill worker: prefix lookup, chunked prefill, first token, KV export and shipping."""
