"""When a sequence is done: EOS, stop token ids, stop strings (none of them before
``min_tokens``), max_tokens, context end."""
from __future__ import annotations

from engine.sequence import Sequence


def check_stop(seq: Sequence, token: int, eos_token_ids: set[int], max_model_len: int) -> str | None:
    p = seq.sampling
    if seq.num_output_tokens < p.min_tokens:   # nothing stops it before min_tokens (vLLM's rule)
        return _length(seq, max_model_len)
    if not p.ignore_eos and token in eos_token_ids:
        return "stop"
    if token in p.stop_token_ids:
        return "stop"
    if p.stop:
        text = seq.detok.text
        # Only the tail can hold a new match: the longest stop string plus the newest text.
        window = max(len(s) for s in p.stop) + 16
        start = max(0, len(text) - window)
        cuts = [i for s in p.stop if (i := text.find(s, start)) != -1]
        if cuts:
            seq.stop_text_cut = min(cuts)
            return "stop"
    return _length(seq, max_model_len)


def _length(seq: Sequence, max_model_len: int) -> str | None:
    if seq.num_output_tokens >= seq.sampling.max_tokens or seq.num_tokens >= max_model_len:
        return "length"
    return None
