"""The decode worker: KV import, continuous-batching decode, batched token streaming."""
